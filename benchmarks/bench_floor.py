"""Loop time against the model-compute floor, per method, on the embedded default (issue 14; not a test).

    python benchmarks/bench_floor.py                                   # source,bn,tent,eata,cema; 3 rounds
    python benchmarks/bench_floor.py --methods all --samples 640 --rounds 2
    python benchmarks/bench_floor.py --methods cema -o cema.tbr_moments=two-pass

For each method it first runs the stream once with every model call recorded (untimed): which
model, the batch's shape, the model's train/eval modes, whether gradients were on (or inference
mode), and whether a backward pass reached that call's logits. Then, in rounds, one process and
one thread (``--threads``), interleaved method by method:

- ``measured``: ``run_benchmark``'s ``seconds`` column for the stream (the strategy's step and
  the scoring, per batch: what the engine times; data loading and model set-up are outside it);
- ``floor``: exactly the recorded passes, replayed alone on the same model objects in the same
  modes at the same batch sizes (random uint8 images of the recorded shapes): each forward, and
  a backward from the logits where the method took one. Pure model compute: the model's own
  uint8-to-float normalisation, its layers (TBR's batch moments included, since CEMA's models
  are TBR models), autograd. Not in the floor: losses, entropy filters, optimiser steps, the
  channel, replay sampling, scoring, health bookkeeping, and any Python around the passes.

``ratio`` = measured / floor (median over rounds of each round's ratio); ``overhead`` = ratio - 1.
The recorded pass counts are checked against the row's work columns (edge/cloud forward and
backward samples); ``work ok`` says whether they agree. ``load`` is /proc/loadavg's 1-minute
value while the method ran (min-max over rounds): on a shared machine, read ratios, not seconds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cema_cli.run import api
from cema_cli.models import flops
from cema_cli.config import RunConfig
from cema_cli.models.nets import Classifier
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.tbr import TestTimeBatchRenorm

DEFAULT_METHODS = "source,bn,tent,eata,cema"


@dataclass
class Pass:
    """One model call as the method made it."""

    model: nn.Module
    shape: tuple[int, ...]
    dtype: torch.dtype
    modes: list[bool]  # ``training`` of every submodule, in ``modules()`` order
    grad: bool
    inference: bool
    backward: bool = False


@dataclass
class Recorder:
    passes: list[Pass] = field(default_factory=list)
    active: bool = False

    def hook(self, module: nn.Module, args: tuple, output) -> None:
        if not self.active or not isinstance(module, Classifier):
            return
        images = args[0]
        call = Pass(module, tuple(images.shape), images.dtype, [m.training for m in module.modules()],
                    torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad, call=call: setattr(call, "backward", True))
        self.passes.append(call)


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def config_for(method: str, samples: int | None, options: dict) -> RunConfig:
    return RunConfig(methods=(method,), corruptions=("gaussian_noise",), severities=(5,), samples=samples, seed=0,
                     device="cpu", method_options={method: options[method]} if method in options else {})


def record(config: RunConfig) -> tuple[list[Pass], dict]:
    """Run once with every model call recorded (only those inside the stream: not EATA's Fisher set-up)."""
    recorder = Recorder()
    original = api.stream_steps

    def recording_steps(*args, **kwargs):
        recorder.active = True
        try:
            return (yield from original(*args, **kwargs))
        finally:
            recorder.active = False

    count_pass = flops._count_pass

    def unrecorded_count(*args, **kwargs):  # the cost columns' FLOP counting (a copy, batch 2): bookkeeping, not the method's work
        active, recorder.active = recorder.active, False
        try:
            return count_pass(*args, **kwargs)
        finally:
            recorder.active = active

    handle = torch.nn.modules.module.register_module_forward_hook(recorder.hook)
    api.stream_steps, flops._count_pass = recording_steps, unrecorded_count
    try:
        row = api.run_benchmark(config)[0]
    finally:
        api.stream_steps, flops._count_pass = original, count_pass
        handle.remove()
    return recorder.passes, row


def work_agrees(passes: list[Pass], row: dict) -> bool:
    forward = sum(p.shape[0] for p in passes)
    backward = sum(p.shape[0] for p in passes if p.backward)
    columns = ("edge_forward_samples", "cloud_forward_samples", "edge_backward_samples", "cloud_backward_samples")
    f_edge, f_cloud, b_edge, b_cloud = (int(row[c] or 0) for c in columns)
    return forward == f_edge + f_cloud and backward == b_edge + b_cloud


def plain_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each TBR layer replaced by a BatchNorm2d sharing its affine
    parameters (same modules() order, so the recorded modes still apply)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TestTimeBatchRenorm):
                bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
                if child.affine:
                    bn.weight, bn.bias = child.weight, child.bias
                setattr(parent, name, bn)
    return model


def with_plain_batchnorm(passes: list[Pass]) -> list[Pass] | None:
    """The same passes on plain-BatchNorm copies of the TBR models; None when no model has TBR."""
    if not any(isinstance(m, TestTimeBatchRenorm) for call in passes for m in call.model.modules()):
        return None
    copies: dict[int, nn.Module] = {}
    for call in passes:
        copies.setdefault(id(call.model), plain_batchnorm(call.model))
    return [Pass(copies[id(call.model)], call.shape, call.dtype, call.modes, call.grad, call.inference, call.backward)
            for call in passes]


def replay(passes: list[Pass]) -> tuple[float, float]:
    """(wall, CPU) seconds of the recorded passes alone: each forward, and its backward where one was taken."""
    inputs: dict[tuple, torch.Tensor] = {}
    wall = cpu = 0.0
    for call in passes:
        key = (call.shape, call.dtype)
        if key not in inputs:
            inputs[key] = torch.randint(0, 256, call.shape, dtype=torch.uint8).to(call.dtype)
        for module, mode in zip(call.model.modules(), call.modes):
            module.training = mode
        params = [p for p in call.model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None  # the methods zero (set_to_none) before each backward
        context = torch.inference_mode() if call.inference else torch.enable_grad() if call.grad else torch.no_grad()
        start, start_cpu = time.perf_counter(), time.process_time()
        with context:
            logits = call.model(inputs[key])
        if call.backward:
            logits.backward(torch.ones_like(logits))
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    return wall, cpu


def measure(config: RunConfig) -> tuple[float, float, float]:
    """(the row's ``seconds``, wall and CPU seconds of the whole stream loop) of one timed run."""
    spent = {}
    original = api.stream_steps

    def timed_steps(*args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return (yield from original(*args, **kwargs))
        finally:
            spent["wall"], spent["cpu"] = time.perf_counter() - start, time.process_time() - start_cpu

    api.stream_steps = timed_steps
    try:
        seconds = api.run_benchmark(config)[0]["seconds"]
    finally:
        api.stream_steps = original
    return seconds, spent["wall"], spent["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, or 'all' (default {DEFAULT_METHODS})")
    parser.add_argument("--samples", type=int, default=None, help="samples per stream (default: all 2,500)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--option", action="append", default=[], help="method.key=value, as cema's --option")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = STRATEGIES.names() if args.methods == "all" else args.methods.split(",")
    options = {"eata": {"fisher_samples": 500}, "cotta": {"augmentations": 8}} if args.methods == "all" else {}
    for text in args.option:
        key, _, value = text.partition("=")
        method, _, name = key.partition(".")
        options.setdefault(method, {})[name] = value
    configs = {m: config_for(m, args.samples, options) for m in methods}
    recorded = {m: record(configs[m]) for m in methods}
    plain = {m: with_plain_batchnorm(recorded[m][0]) for m in methods}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    print(f"threads {torch.get_num_threads()}, samples {args.samples or 'all'}, options {options or 'none'}, torch {torch.__version__}; "
          f"load at start {Path('/proc/loadavg').read_text().strip()}")
    for round_index in range(args.rounds):
        for method in methods:
            before = load()
            seconds, wall, cpu = measure(configs[method])
            floor_wall, floor_cpu = replay(recorded[method][0])
            bn_cpu = replay(plain[method])[1] if plain[method] else floor_cpu
            r = {"seconds": seconds, "wall": wall, "cpu": cpu, "floor_wall": floor_wall, "floor_cpu": floor_cpu,
                 "bn_cpu": bn_cpu, "load": max(before, load())}
            results[method].append(r)
            print(f"round {round_index + 1} {method:<14} loop {wall:6.2f} s wall {cpu:6.2f} s CPU  floor {floor_wall:6.2f} s wall "
                  f"{floor_cpu:6.2f} s CPU (BN floor {bn_cpu:6.2f})  ratio {wall / floor_wall:5.2f} wall {cpu / floor_cpu:5.2f} CPU  "
                  f"load {r['load']:.2f}", flush=True)
    print("\nmedians over rounds. loop: the stream loop's time (api.stream_steps); seconds: the row's column; ratio = loop / floor (wall, or CPU =\n"
          "process time, which a busy machine disturbs far less); vs BN: CPU ratio against the floor with plain train-mode\n"
          "BatchNorm in place of TBR (what TBR's exact batch moments cost; = CPU for methods without TBR)")
    print(f"{'method':<14}{'passes':>7}{'work ok':>8}{'loop s':>8}{'CPU s':>7}{'floor CPU':>10}{'wall':>6}{'seconds':>8}"
          f"{'CPU':>6}{'overhead':>9}{'vs BN':>7}  load")
    for method in methods:
        passes, row = recorded[method]
        rs = results[method]
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        ratio = {
            "wall": statistics.median(r["wall"] / r["floor_wall"] for r in rs),
            "seconds": statistics.median(r["seconds"] / r["floor_wall"] for r in rs),
            "cpu": statistics.median(r["cpu"] / r["floor_cpu"] for r in rs),
            "bn": statistics.median(r["cpu"] / r["bn_cpu"] for r in rs)}
        print(f"{method:<14}{len(passes):>7}{'yes' if work_agrees(passes, row) else 'NO':>8}{med['wall']:>8.2f}{med['cpu']:>7.2f}"
              f"{med['floor_cpu']:>10.2f}{ratio['wall']:>6.2f}{ratio['seconds']:>8.2f}{ratio['cpu']:>6.2f}{ratio['cpu'] - 1:>9.0%}"
              f"{ratio['bn']:>7.2f}  {min(r['load'] for r in rs):.2f}-{max(r['load'] for r in rs):.2f}")
    print(f"load at end {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
