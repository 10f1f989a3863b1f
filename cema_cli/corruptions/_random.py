"""Per-sample random draws (shared/spec/corruptions.md section 5).

Every sample owns a CPU ``torch.Generator`` seeded from (seed, corruption, severity, index), and
draws its variables from it in the order of the section 5 table. Draws happen on the CPU (so
CPU and CUDA runs see the same numbers) and are moved to the images' device afterwards.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch


def sample_generators(seed: int, name: str, severity: int, indices: torch.Tensor | Sequence[int]) -> list[torch.Generator]:
    """One torch.Generator per sample, seeded from (seed, corruption, severity, sample index)."""
    values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    gens = []
    for index in values:
        digest = hashlib.blake2b(f"{seed}/{name}/{severity}/{int(index)}".encode(), digest_size=8).digest()
        gens.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1)))
    return gens


def per_sample(gens: list[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack one draw per sample (each from its own generator) into a batch tensor on the CPU."""
    return torch.stack([draw(g) for g in gens])


def uniform(g: torch.Generator, shape: tuple[int, ...], low: float, high: float, dtype=torch.float64) -> torch.Tensor:
    """U(low, high) like NumPy's uniform: low + (high - low) * U[0, 1)."""
    return low + (high - low) * torch.rand(shape, generator=g, dtype=dtype)


# ------------------------------------------------------------- NumPy twin of a torch generator
#
# A CPU torch.Generator is a 32-bit Mersenne Twister (MT19937) whose uniforms are bit masks of
# its raw outputs: float32 = (raw & (2^24 - 1)) * 2^-24 (one raw value per element), float64 =
# (((raw1 << 32) | raw2) & (2^53 - 1)) * 2^-53 (two, the first one high). NumPy's MT19937 runs
# the same engine, seeded the same way (init_genrand of the seed's low 32 bits), and draws its
# raw values in bulk several times faster than torch's scalar sampling loop, so a corruption
# may take its sample's raw values from the twin and apply the masks itself: the same numbers,
# bit for bit. The twin is used only where a self-check against torch passes once per process.

_TORCH_STATE_BYTES = 5056  # CPUGeneratorImplState: u64 seed, i32 left, i32 seeded, u64 next, u64 state[624], ...
_twin_checked: bool | None = None
_twin_local = threading.local()


def _mt_position(g: torch.Generator) -> tuple[int, int, np.ndarray] | None:
    """(left, next, state) of a CPU torch generator's engine, or None if the layout is unknown."""
    raw = g.get_state().numpy()
    if raw.size != _TORCH_STATE_BYTES:
        return None
    left = int(raw[8:12].view(np.int32)[0])
    nxt = int(raw[16:24].view(np.uint64)[0])
    return left, nxt, raw[24:24 + 624 * 8].view(np.uint64)


def _twin_unchecked(g: torch.Generator) -> np.random.MT19937 | None:
    position = _mt_position(g)
    if position is None:
        return None
    left, nxt, state = position
    bits = getattr(_twin_local, "bits", None)
    if bits is None:
        bits = _twin_local.bits = np.random.MT19937(0)
    if (left, nxt) == (1, 0) and int(state[0]) == g.initial_seed() & 0xFFFFFFFF:
        bits._legacy_seeding(g.initial_seed() & 0xFFFFFFFF)  # fresh since manual_seed: init_genrand, no copy
    else:
        bits.state = {"bit_generator": "MT19937", "state": {"key": state.astype(np.uint32), "pos": 625 - left}}
    return bits


def _twin_works() -> bool:
    """Once per process: do the twin's raw values give torch's float32 and float64 uniforms?"""
    global _twin_checked
    if _twin_checked is None:
        try:
            g = torch.Generator().manual_seed(0x5EED_CE3A_0001)
            ok = True
            for dtype in (torch.float32, torch.float64):  # the second starts mid-stream
                bits = _twin_unchecked(g)
                raw = bits.random_raw(2 * 700) if bits is not None else None
                expected = torch.rand(700, generator=g, dtype=dtype).numpy()
                if raw is None:
                    ok = False
                elif dtype == torch.float32:
                    ok &= np.array_equal(uniform32_from_raw(raw[:700]), expected)
                else:
                    ok &= np.array_equal(uniform64_from_raw(raw[0::2], raw[1::2]), expected)
            _twin_checked = bool(ok)
        except Exception:  # an unknown torch/NumPy layout: keep torch's own sampling
            _twin_checked = False
    return _twin_checked


def numpy_twin(g: torch.Generator) -> np.random.MT19937 | None:
    """A NumPy MT19937 positioned where CPU generator ``g`` is (its next raw value is g's), or
    None where this torch/NumPy cannot be twinned. ``g`` itself does not advance: use it for a
    sample's last draw only. The returned object is reused by the next call in this thread."""
    return _twin_unchecked(g) if _twin_works() else None


def uniform32_from_raw(raw: np.ndarray) -> np.ndarray:
    """torch.rand(dtype=float32) from raw MT19937 values: (raw & (2^24 - 1)) * 2^-24."""
    return (raw & 0xFFFFFF).astype(np.float32) * np.float32(2.0**-24)


def uniform64_from_raw(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """torch.rand(dtype=float64) from pairs of raw MT19937 values (the first of a pair high)."""
    high64, low64 = high.astype(np.uint64), low.astype(np.uint64)
    return (((high64 & np.uint64(0x1FFFFF)) << np.uint64(32)) | low64).astype(np.float64) * 2.0**-53
