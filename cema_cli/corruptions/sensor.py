"""Sensor faults of inertial windows, severities 1-5 (README, "Beyond images").

Every fault works on float windows (N, 6, T) in physical units (accelerometer x, y, z in g, then
gyroscope x, y, z in rad/s) and draws its randomness per window from a generator seeded by
(seed, fault, severity, index), as the image corruptions do, so a window's fault does not depend
on batching. ``unit`` holds each channel's standard deviation on the source training windows:
noise and offsets are multiples of it. The constants were calibrated as ImageNet-C's were: the
source edge model's accuracy falls at every step from severity 1 to 5 (README table).

- ``gaussian_noise``: white noise of c x unit per sample.
- ``gain_drift``: per channel a gain 1 + g u and an offset that drifts linearly over the window
  from o u1 to o u2 units (u uniform in [-1, 1]): an uncalibrated, warming sensor.
- ``misalignment``: the watch sits rotated on the wrist: both sensors' axes turn by an angle of
  the severity's degrees (random sign) about a random axis.
- ``channel_dropout``: each channel is dead (reads 0) with the severity's probability.
- ``rate_jitter``: the samples are not taken at the nominal 50 Hz: the sensor's clock runs at
  1 + r u times that rate and each sample's time jitters by N(0, j) sample periods, while the
  model reads them as regular. The recording is read at those times by linear interpolation
  (from the window and ``margin`` samples of the recording on either side).

Measured on the source edge model: it is nearly invariant to a clock error alone (0.96 at half
the rate, 0.99 at twice the rate: it reads posture more than tempo), so the timing jitter does
most of the work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cema_cli.corruptions._random import per_sample, sample_generators, uniform

SENSOR_SHIFTS: tuple[str, ...] = ("gaussian_noise", "gain_drift", "misalignment", "channel_dropout", "rate_jitter")

NOISE = (0.3, 0.45, 0.6, 0.8, 1.1)  # x unit
GAIN_DRIFT = ((0.2, 0.25), (0.3, 0.45), (0.45, 0.7), (0.6, 1.0), (0.8, 1.4))  # (gain g, offset o x unit)
MISALIGNMENT = (10.0, 20.0, 35.0, 50.0, 70.0)  # degrees
DROPOUT = (0.1, 0.2, 0.35, 0.5, 0.65)  # probability that a channel is dead
RATE_JITTER = ((0.05, 3.0), (0.1, 6.0), (0.15, 9.0), (0.2, 12.0), (0.25, 16.0))  # (clock r, jitter j in periods)

Fault = Callable[[torch.Tensor, torch.Tensor, int, list[torch.Generator]], torch.Tensor]


def gaussian_noise(x: torch.Tensor, unit: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    noise = per_sample(gens, lambda g: torch.randn(x.shape[1:], generator=g, dtype=torch.float64))
    return x + NOISE[severity - 1] * unit.view(1, -1, 1) * noise


def gain_drift(x: torch.Tensor, unit: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    gain, offset = GAIN_DRIFT[severity - 1]
    draws = per_sample(gens, lambda g: uniform(g, (3, x.shape[1]), -1.0, 1.0))  # gain, start, end per channel
    ramp = torch.linspace(0.0, 1.0, x.shape[2], dtype=torch.float64)
    start, end = (offset * draws[:, k, :, None] * unit.view(1, -1, 1) for k in (1, 2))
    return x * (1 + gain * draws[:, 0, :, None]) + start + (end - start) * ramp


def rotation_matrix(axis: torch.Tensor, angle: float) -> torch.Tensor:
    """Rodrigues: the rotation by ``angle`` radians about the unit ``axis``."""
    k = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def misalignment(x: torch.Tensor, unit: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    def draw(g: torch.Generator) -> torch.Tensor:
        axis = torch.randn(3, generator=g, dtype=torch.float64)
        sign = 1.0 if float(torch.rand(1, generator=g)) < 0.5 else -1.0
        return rotation_matrix(axis / axis.norm(), sign * math.radians(MISALIGNMENT[severity - 1]))

    rotations = per_sample(gens, draw)  # (N, 3, 3), the same for both sensors
    return torch.cat([rotations @ x[:, :3], rotations @ x[:, 3:]], dim=1)


def channel_dropout(x: torch.Tensor, unit: torch.Tensor, severity: int, gens: list[torch.Generator]) -> torch.Tensor:
    alive = per_sample(gens, lambda g: torch.rand(x.shape[1], generator=g, dtype=torch.float64)) >= DROPOUT[severity - 1]
    return x * alive[:, :, None]


def rate_jitter(x: torch.Tensor, unit: torch.Tensor, severity: int, gens: list[torch.Generator], margin: int) -> torch.Tensor:
    rate, jitter = RATE_JITTER[severity - 1]
    span, length = x.shape[2], x.shape[2] - 2 * margin
    middle = margin + (length - 1) / 2
    nominal = torch.arange(length, dtype=torch.float64) + margin - middle

    def times(g: torch.Generator) -> torch.Tensor:
        clock = 1 + rate * float(uniform(g, (1,), -1.0, 1.0))
        return (middle + nominal * clock + jitter * torch.randn(length, generator=g, dtype=torch.float64)).clamp(0, span - 1)

    t = per_sample(gens, times)  # (N, T): where each sample is read
    left = t.floor().long().clamp(max=span - 2)
    frac = (t - left)[:, None, :]
    index = left[:, None, :].expand(-1, x.shape[1], -1)
    return x.gather(2, index) * (1 - frac) + x.gather(2, index + 1) * frac


FAULTS: dict[str, Fault] = {
    "gaussian_noise": gaussian_noise, "gain_drift": gain_drift, "misalignment": misalignment,
    "channel_dropout": channel_dropout,
}


def shift_windows(x: torch.Tensor, unit: torch.Tensor, name: str, severity: int, seed: int, indices: torch.Tensor,
                  margin: int = 0) -> torch.Tensor:
    """Fault ``name`` at ``severity`` on float windows (N, 6, T + 2 margin) in physical units, the
    window in the middle and ``margin`` samples of its recording on either side: the faulty
    windows (N, 6, T). Window i's randomness comes from (seed, name, severity, indices[i]) only."""
    gens = sample_generators(seed, f"sensor/{name}", severity, indices)
    if name == "rate_jitter":
        return rate_jitter(x.double(), unit.double(), severity, gens, margin)
    return FAULTS[name](x[:, :, margin : x.shape[2] - margin].double(), unit.double(), severity, gens)
