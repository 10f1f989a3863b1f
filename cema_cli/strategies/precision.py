"""Mixed precision of the learning steps (``--amp``), shared by every method that takes one.

The run's autocast (``api.Precision``) wraps each batch's step, so the model passes run in the
autocast dtype; everything a method computes from them stays float32: the model wrapper returns
float32 logits (entropy, softmax, every loss and filter), batch moments are taken in float32
(TBR, RoTTA's robust BN), and ``float32_region`` turns autocast off where a method does its own
arithmetic on features or images (LAME, T3A, CoTTA's augmentation, EATA's Fisher set-up).

The signal for loss scaling is the autocast in force where the step is taken: under float16
autocast every optimiser step goes through that optimiser's own ``torch.amp.GradScaler``
(the loss scaled before backward, gradients unscaled and checked, the step skipped when one is
inf or NaN, the scale adapted); bfloat16 and float32 steps are plain. Backward passes and
optimiser steps run outside autocast, as PyTorch's AMP recipe prescribes. None of the
references runs in mixed precision (methods-more.md section 7.6: MD runs SAR without it), so
float32 (no ``--amp``) is the faithful default.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

_SCALERS: weakref.WeakKeyDictionary[torch.optim.Optimizer, torch.amp.GradScaler] = weakref.WeakKeyDictionary()


def float16_autocast(device_type: str) -> bool:
    """Whether float16 autocast is on for ``device_type`` here (the fp16 steps' signal)."""
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


def scaler_for(optimizer: torch.optim.Optimizer, device_type: str) -> torch.amp.GradScaler | None:
    """The optimiser's GradScaler under float16 autocast (made on first use, kept with the
    optimiser wherever it is shared), else None."""
    if not float16_autocast(device_type):
        return None
    if optimizer not in _SCALERS:
        _SCALERS[optimizer] = torch.amp.GradScaler(device_type)
    return _SCALERS[optimizer]


def float32_region(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off: the arithmetic inside runs in the dtypes of its inputs."""
    return torch.autocast(device_type, enabled=False)


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward()`` outside autocast, scaled when there is a scaler."""
    with float32_region(loss.device.type):
        (scaler.scale(loss) if scaler is not None else loss).backward()


def minimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One step of ``optimizer`` on ``loss``: zero the gradients, backward, step. Under float16
    autocast through the optimiser's GradScaler; returns False when it skipped a non-finite step."""
    scaler = scaler_for(optimizer, loss.device.type)
    optimizer.zero_grad(set_to_none=True)
    backward(loss, scaler)
    with float32_region(loss.device.type):
        return step(optimizer, scaler)


def step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> bool:
    """``optimizer.step()``, or the scaler's step and update; False when the scaler skipped it."""
    if scaler is None:
        optimizer.step()
        return True
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= before  # the scale only shrinks when a gradient was inf or NaN


def unscale_finite(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> bool:
    """Unscale the gradients in place (a scaler's first use in a two-pass step, SAR's ascent)
    and close that pass; returns whether they are all finite (always True without a scaler)."""
    if scaler is None:
        return True
    scaler.unscale_(optimizer)
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    finite = not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())  # one sync
    scaler.update()  # an inf halves the scale, as a skipped step would
    return finite
