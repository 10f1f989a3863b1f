"""Test-time batch renormalisation (methods.md section 4.1), used by both CEMA models."""

from __future__ import annotations

import torch
from torch import nn

from cema_cli.models.nets import at_least_float32

TBR_MOMENTS = ("welford", "two-pass")  # how batch moments are computed; welford: torch.var, the default


class TestTimeBatchRenorm(nn.modules.batchnorm._BatchNorm):
    """xhat = (x - mu_B)/sigma_B * r + d with r = sg(sigma_B)/sigma_R, d = sg(mu_B - mu_R)/sigma_R.

    In value xhat = (x - mu_R)/sigma_R, but gradients flow through the batch moments (training
    mode). The source running moments are discarded: the first batch seen initialises them
    (or ``set_running_moments`` does). Training mode moves them by EMA with the replaced layer's
    own momentum, as the official code does (0.1 in PyTorch's default, 0.01 in some ported
    models; a layer without one, i.e. a cumulative average, gets PyTorch's default 0.1); eval
    mode leaves them alone, so an eval prediction depends only on the sample and the current
    running moments.
    """

    __test__ = False  # not a pytest class despite its name

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, moments: str = "welford") -> None:
        momentum = bn.momentum if bn.momentum is not None else 0.1
        super().__init__(bn.num_features, bn.eps, momentum=momentum, affine=bn.affine)
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("initialised", torch.tensor(False, device=bn.running_mean.device))
        self.moments = moments
        self.to(bn.running_mean.device)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        pass

    def _batch_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_B, unbiased var_B) per channel: ``welford`` with torch.var (on CPU a sequential
        Welford pass accumulated in float64, about 10 ns per value: most of TBR's cost), or
        ``two-pass``: the squared deviations from the mean summed in the input's dtype (several
        times faster on CPU; the variance differs in the last bits, about 1e-7 relative). In
        float32 also when ``x`` is half precision (--amp)."""
        x = at_least_float32(x)
        dims = [0] + list(range(2, x.ndim))
        mean = x.mean(dims)
        if self.moments == "welford":
            return mean, x.var(dims, unbiased=True)
        count = x.numel() // x.shape[1]
        return mean, (x - self._shape(mean, x)).square().sum(dims) / (count - 1)

    def _shape(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            self._initialise(x)
        sigma_r = torch.sqrt(self.running_var + self.eps)
        if self.training:
            mu_b, var_b = self._batch_moments(x)
            sigma_b = torch.sqrt(var_b + self.eps)
            r = sigma_b.detach() / sigma_r
            d = (mu_b.detach() - self.running_mean) / sigma_r
            # (x - mu_B)/sigma_B * r + d as one per-channel scale and shift (one pass over x).
            scale, shift = r / sigma_b, d - mu_b * r / sigma_b
            with torch.no_grad():
                self.running_mean.lerp_(mu_b, self.momentum)
                self.running_var.lerp_(var_b, self.momentum)
        else:
            scale, shift = 1.0 / sigma_r, -self.running_mean / sigma_r
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return torch.addcmul(self._shape(shift, x), x, self._shape(scale, x)).to(x.dtype)  # float32 moments, x's dtype out

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        mean, var = self._batch_moments(x)
        self.running_mean.copy_(mean)
        self.running_var.copy_(var)
        self.initialised.fill_(True)


def use_batch_renorm(model: nn.Module, moments: str = "welford") -> nn.Module:
    """Replace every BatchNorm of ``model`` in place by TestTimeBatchRenorm (same affine params),
    computing batch moments the ``moments`` way (TBR_MOMENTS)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, TestTimeBatchRenorm(child, moments))
        else:
            use_batch_renorm(child, moments)
    return model


def running_moments(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running moments of every TestTimeBatchRenorm layer, keyed as in norm_state."""
    return {f"{name}.{key}": getattr(m, key).detach().clone() for name, m in model.named_modules()
            if isinstance(m, TestTimeBatchRenorm) for key in ("running_mean", "running_var")}


@torch.no_grad()
def set_running_moments(model: nn.Module, moments: dict[str, torch.Tensor]) -> None:
    """Start each named TBR layer from the given moments instead of its first batch."""
    modules = dict(model.named_modules())
    for key, value in moments.items():
        name, _, attr = key.rpartition(".")
        getattr(modules[name], attr).copy_(value)
        modules[name].initialised.fill_(True)
