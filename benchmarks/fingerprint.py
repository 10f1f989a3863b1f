"""A digest of everything a run computes, to prove a speed change altered no number (not a test).

    python benchmarks/fingerprint.py                  # every method, 2 domains, 512 samples
    python benchmarks/fingerprint.py --methods cema --corruptions gaussian_noise --samples 2500

For each (method, domain) it prints the sha256 of every scored logit (every batch, in order)
followed by every parameter and buffer of the models the method adapts (``adapted_models``) at
the end of the stream, plus the row's numeric columns that do not measure time. Run it before
and after a change (``--threads 1``: the same kernels): identical digests mean bitwise identical
results. One thread by default, so the float reductions run in one fixed order.
"""

from __future__ import annotations

import argparse
import hashlib

import torch

from cema_cli.run import api, engine
from cema_cli.run.sweep import TIMING_COLUMNS  # measured columns (cloud_seconds too): not digested
from cema_cli.config import RunConfig
from cema_cli.strategies import STRATEGIES

DIGESTS: list[str] = []


def traced_stream_steps(strategy, batches, channel, device, *args, **kwargs):
    """engine.stream_steps (what api runs a stream with), hashing the scored logits and the
    adapted models' final state."""
    digest = hashlib.sha256()
    original = strategy.step

    def step(images: torch.Tensor) -> torch.Tensor:
        logits = original(images)
        digest.update(logits.detach().float().cpu().numpy().tobytes())
        return logits

    strategy.step = step
    try:
        tally = yield from engine.stream_steps(strategy, batches, channel, device, *args, **kwargs)
    finally:
        del strategy.step
    models = strategy.adapted_models() if hasattr(strategy, "adapted_models") else {}
    for role, model in sorted(models.items()):
        for name, value in model.state_dict().items():
            digest.update(f"{role}:{name}".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    DIGESTS.append(digest.hexdigest()[:16])
    return tally


def fingerprints(config: RunConfig) -> list[tuple[dict, str, str]]:
    """(row, digest of logits and final states, digest of the row's non-timing numbers) per row."""
    DIGESTS.clear()
    original = api.stream_steps
    api.stream_steps = traced_stream_steps
    try:
        rows = api.run_benchmark(config)
    finally:
        api.stream_steps = original
    if len(DIGESTS) != len(rows):  # the hook missed the streams: a refactor moved them
        raise SystemExit(f"fingerprint: {len(DIGESTS)} streams traced for {len(rows)} rows; "
                         "api no longer runs its streams through api.stream_steps")
    out = []
    for row, digest in zip(rows, DIGESTS):
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in TIMING_COLUMNS and v is not None}
        out.append((row, digest, hashlib.sha256(repr(sorted(numbers.items())).encode()).hexdigest()[:12]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(STRATEGIES.names()))
    parser.add_argument("--corruptions", default="gaussian_noise,contrast")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = RunConfig(methods=tuple(args.methods.split(",")), corruptions=tuple(args.corruptions.split(",")),
                       severities=(5,), samples=args.samples, seed=0, device="cpu",
                       method_options={"eata": {"fisher_samples": 500}, "cotta": {"augmentations": 8}})
    for row, digest, numbers_digest in fingerprints(config):
        print(f"{row['method']:<14}{row['corruption']:<16}{row['accuracy']:.6f} {digest} {numbers_digest}")


if __name__ == "__main__":
    main()
