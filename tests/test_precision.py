"""Mixed precision done right (issue 27; cema_cli/strategies/precision.py), on the CPU, where
torch runs both float16 and bfloat16 autocast and a real GradScaler: loss scaling under fp16
only, skipped non-finite steps, SAR's two scaled passes, float32 logits, moments and losses,
and finite AMP rows for every method."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cema_cli.run.api import run_benchmark
from cema_cli.config import RunConfig
from cema_cli.models import ModelOptions, load_model
from cema_cli.strategies import precision
from cema_cli.strategies.common import entropy
from cema_cli.strategies.eata import fisher_diagonal
from cema_cli.strategies.precision import minimise, scaler_for
from cema_cli.strategies.sar import SAR_SUBSET, SARConfig, SARLearner
from cema_cli.strategies.subsets import subset_model
from cema_cli.strategies.tbr import use_batch_renorm

FP16 = {"device_type": "cpu", "dtype": torch.float16}
BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def linear_pair(seed: int = 0) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    layer = nn.Linear(4, 3)
    return layer, copy.deepcopy(layer)


def sgd(model: nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def test_without_autocast_a_step_is_the_plain_zero_backward_step():
    x = torch.randn(5, 4)
    a, b = linear_pair()
    opt_a, opt_b = sgd(a), sgd(b)
    for _ in range(3):
        assert minimise(opt_a, a(x).square().mean())
        opt_b.zero_grad(set_to_none=True)
        b(x).square().mean().backward()
        opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert scaler_for(opt_a, "cpu") is None


def test_fp16_steps_are_loss_scaled_so_small_gradients_survive():
    """A loss of 1e-9 x sum(W x): its float16 backward underflows to zero gradients unless the
    loss is scaled first; with the scaler the step moves W by lr x the true gradient."""
    x = torch.randn(8, 4)
    plain, scaled = linear_pair()
    with torch.autocast(**FP16):
        (1e-9 * plain(x).float().sum()).backward()
    assert plain.weight.grad.abs().max() == 0  # float16 underflow: the bug the scaler fixes
    optimizer = torch.optim.SGD(scaled.parameters(), lr=1e6)
    before = scaled.weight.detach().clone()
    with torch.autocast(**FP16):
        assert minimise(optimizer, 1e-9 * scaled(x).float().sum())
    true_grad = 1e-9 * x.sum(0).expand(3, 4)
    assert torch.allclose(before - scaled.weight.detach(), 1e6 * true_grad, rtol=2e-2)
    assert scaler_for(optimizer, "cpu") is scaler_for(optimizer, "cpu")  # one scaler per optimiser


def test_a_non_finite_fp16_step_is_skipped_and_the_scale_halved():
    layer, _ = linear_pair()
    optimizer = sgd(layer)
    before = [p.detach().clone() for p in layer.parameters()]
    with torch.autocast(**FP16):
        scale = scaler_for(optimizer, "cpu").get_scale()
        assert not minimise(optimizer, layer(torch.randn(2, 4)).float().sum() * math.inf)
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), before))
    assert scaler_for(optimizer, "cpu") is None  # outside fp16 autocast: plain steps
    with torch.autocast(**FP16):
        assert scaler_for(optimizer, "cpu").get_scale() == scale / 2


def test_bf16_needs_no_scaler():
    layer, _ = linear_pair()
    optimizer = sgd(layer)
    with torch.autocast(**BF16):
        assert scaler_for(optimizer, "cpu") is None
        assert minimise(optimizer, layer(torch.randn(2, 4)).float().sum())


def test_logits_entropy_and_tbr_moments_are_float32_under_autocast():
    model = load_model("mnist-edge", options=ModelOptions(random_init=True))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    tbr = use_batch_renorm(copy.deepcopy(model)).train()
    with torch.autocast(**BF16):
        logits = model(images)
        inner = model.net.fc(torch.randn(2, model.net.fc.in_features))
        out = tbr(images)
    assert inner.dtype == torch.bfloat16  # the network does run in bfloat16
    assert logits.dtype == torch.float32 and entropy(logits).dtype == torch.float32 and out.dtype == torch.float32
    moments = [m.running_var for m in tbr.modules() if hasattr(m, "initialised")]
    assert moments and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in moments)


def test_eatas_fisher_is_float32_whatever_the_autocast():
    model = load_model("mnist-edge", options=ModelOptions(random_init=True)).train()
    params = [p for n, p in model.named_parameters() if "bn" in n or "stem.1" in n]
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    plain = fisher_diagonal(model, params, images, 4)
    with torch.autocast(**FP16):
        under = fisher_diagonal(model, params, images, 4)
    assert all(torch.equal(a, b) for a, b in zip(plain, under))


def sar_learner(seed: int = 0) -> SARLearner:
    torch.manual_seed(seed)
    model, params = subset_model(load_model("mnist-edge", options=ModelOptions(random_init=True)), SAR_SUBSET)
    return SARLearner(model, params, SARConfig(e0_factor=10.0, lr=0.5), num_classes=10)  # all reliable; steps well above float32's ulp


def test_sar_under_fp16_scales_both_passes_and_moves_as_float32_does():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    exact, half = sar_learner(), sar_learner()
    start = {n: p.detach().clone() for n, p in exact.params.items()}
    exact.step(images)
    with torch.autocast(**FP16):
        result = half.step(images)
        assert scaler_for(half.sam.base, "cpu").get_scale() == 65536.0  # two finite passes: no back-off
    assert result.kept == 16
    moved = torch.cat([(exact.params[n] - start[n]).detach().flatten() for n in start])
    moved_half = torch.cat([(half.params[n] - start[n]).detach().flatten() for n in start])
    assert moved.abs().max() > 0 and torch.allclose(moved_half, moved, rtol=0.05, atol=0.05 * float(moved.abs().max()))


def test_sar_skips_the_batch_when_its_first_scaled_pass_overflows():
    learner = sar_learner()
    start = {n: p.detach().clone() for n, p in learner.params.items()}
    precision._SCALERS[learner.sam.base] = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # float16 gradients overflow
    with torch.autocast(**FP16):
        result = learner.step(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
        assert scaler_for(learner.sam.base, "cpu").get_scale() == 2.0**99
    assert result.kept == 0 and learner.recovery.average is None
    assert all(torch.equal(p, start[n]) for n, p in learner.params.items())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_rows_are_finite_and_record_the_precision(amp):
    """Every method on the embedded default under autocast on the CPU: the float32 run's verdict
    (never diverged or collapsed; lame is degraded on this stream in float32 too), the accuracy
    of the float32 run within 3 points (128 samples), the precision in the row.
    CoTTA trains every convolution, whose float16 backward the CPU runs slowly: bf16 only."""
    methods = ("source", "bn", "tent", "eata", "sar", "deyo", "lame", "t3a", "rotta", "cema") + (("cotta",) if amp == "bf16" else ())
    options = {"eata": {"fisher_samples": 64}, "cotta": {"augmentations": 4}}
    config = dict(methods=methods, corruptions=("gaussian_noise",), severities=(5,), samples=128, device="cpu", method_options=options)
    exact = {r["method"]: r for r in run_benchmark(RunConfig(**config))}
    for row in run_benchmark(RunConfig(**config, amp=amp)):
        assert row["status"] == exact[row["method"]]["status"] and math.isfinite(row["accuracy"]), row["method"]
        assert not row["status"].startswith(("diverged", "collapsed")), row["method"]
        assert abs(row["accuracy"] - exact[row["method"]]["accuracy"]) <= 0.03, row["method"]
        assert (row["amp"], row["amp_dtype"], row["loss_scaling"]) == (amp, {"bf16": "bfloat16", "fp16": "float16"}[amp],
                                                                         "dynamic" if amp == "fp16" else "none")


def test_a_fleets_cloud_learns_under_the_runs_autocast():
    from types import SimpleNamespace

    from cema_cli.link.cloud_meter import CloudMeter
    from cema_cli.run.api import autocast_for
    from cema_cli.run.fleet import metered_learn

    class Learner:
        context = SimpleNamespace(cloud_meter=CloudMeter())
        dtypes: list = []

        def learn(self, images):
            self.dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return True

    learner = Learner()
    metered_learn(learner, None, autocast_for("bf16", torch.device("cpu")))
    metered_learn(learner, None)
    assert learner.dtypes == [torch.bfloat16, None]
