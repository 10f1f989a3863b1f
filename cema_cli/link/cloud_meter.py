"""What the cloud half of a cloud-edge step costs: measured seconds and counted GFLOPs.

A strategy's cloud half (learning on the arrived uploads and preparing the sync) runs inside
``with meter:``. Two numbers come out, kept apart as the README's cost section says:

- measured (hardware-dependent; the row's ``device`` says where): ``seconds``, timed with CUDA
  events on a CUDA device (the GPU's own clock, read once per reading, not once per step) and
  with ``time.perf_counter`` elsewhere (an MPS device is synchronised first);
- counted (exact, hardware-independent): ``forward_gflops`` and ``backward_gflops``. Every
  model call in the window (a cema ``Classifier``, whatever the method names it: foundation,
  student, teacher, cloud copy) adds its batch size times the model's per-sample forward
  GFLOPs, and, when a backward pass reaches its output, times its per-sample backward GFLOPs.
  Both come from ``torch.utils.flop_counter`` (2 FLOPs per multiply-add; the backward counted
  as the counter measures it for the parameters that train: cema_cli/models/flops.py), once
  per architecture and input; the counting itself is left out of the measured seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch
from torch import nn

from cema_cli.models.flops import PassGFLOPs, pass_gflops_per_sample
from cema_cli.models.nets import Classifier

# Per-sample GFLOPs by (architecture, trainable parameters, input): counted once per process.
_PER_SAMPLE: dict[tuple[Any, ...], PassGFLOPs] = {}


class CloudMeter:
    """Cumulative cloud seconds and GFLOPs of one strategy; readings are differences."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.forward_gflops = 0.0
        self.backward_gflops = 0.0
        self._seconds = 0.0
        self._segments: list[tuple[Any, Any]] = []  # CUDA (start, end) events not yet read
        self._start: Any = None
        self._hook: Any = None
        self._counting = False  # the per-sample count runs a copy of the model: not a cloud call
        self._thread = 0

    @property
    def gflops(self) -> float:
        return self.forward_gflops + self.backward_gflops

    @property
    def seconds(self) -> float:
        """Measured seconds inside the window so far (waits for the CUDA events it reads)."""
        for start, end in self._segments:
            end.synchronize()
            self._seconds += start.elapsed_time(end) / 1000.0
        self._segments.clear()
        return self._seconds

    def mirror(self, forward_gflops: float, backward_gflops: float, seconds: float) -> None:
        """Report another process's cloud: the real link's edge mirrors the server's meter."""
        self.forward_gflops, self.backward_gflops, self._seconds = forward_gflops, backward_gflops, seconds

    def __enter__(self) -> "CloudMeter":
        self._thread = threading.get_ident()  # the hook is global: other threads' calls (a server's other sessions) are not ours
        self._hook = nn.modules.module.register_module_forward_hook(self._count_call)
        self._begin()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end()
        self._hook.remove()
        self._hook = None

    def _begin(self) -> None:
        if self.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record(torch.cuda.current_stream(self.device))
        else:
            self._synchronise()
            self._start = time.perf_counter()

    def _end(self) -> None:
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            self._segments.append((self._start, end))
        else:
            self._synchronise()
            self._seconds += time.perf_counter() - self._start

    def _synchronise(self) -> None:
        if self.device.type == "mps":
            torch.mps.synchronize()

    def _count_call(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Global forward hook, active inside the window: count the calls of cema models."""
        if self._counting or threading.get_ident() != self._thread or not isinstance(module, Classifier) or not args \
                or not isinstance(args[0], torch.Tensor):
            return
        images = args[0]
        per_sample = self._per_sample(module, images)
        samples = int(images.shape[0])
        self.forward_gflops += samples * per_sample.forward
        if isinstance(output, torch.Tensor) and output.requires_grad and per_sample.backward:
            backward = samples * per_sample.backward
            output.register_hook(lambda grad: self._add_backward(backward))

    def _add_backward(self, gflops: float) -> None:
        self.backward_gflops += gflops

    def _per_sample(self, model: Classifier, images: torch.Tensor) -> PassGFLOPs:
        key = (type(model.net).__qualname__, tuple((n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()),
               tuple(images.shape[1:]), images.dtype, model.input_size, model.class_subset is None)
        if key not in _PER_SAMPLE:
            self._end()  # counting is bookkeeping, not cloud work: out of the measured seconds
            self._counting = True
            try:
                with torch.random.fork_rng(devices=[]):  # a copy in training mode may draw (dropout): the run's draws stay
                    _PER_SAMPLE[key] = pass_gflops_per_sample(model, tuple(images.shape[1:]), images.dtype)
            finally:
                self._counting = False
            self._begin()
        return _PER_SAMPLE[key]
