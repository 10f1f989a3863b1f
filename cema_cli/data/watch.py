"""``watch``: smartwatch inertial recordings of shoulder exercises, shipped in the seglearn wheel.

``seglearn/data/watch_dataset.npy`` (seglearn 1.2.5, BSD-3; Burns et al. 2018, arXiv 1802.01489)
holds 140 recordings: 10 subjects x 7 physiotherapy exercises x left and right wrist, 6
channels (accelerometer x, y, z in g; gyroscope x, y, z in rad/s) at 50 Hz. The file is a
pickled dict; cema reads it once with an unpickler that can build numpy arrays and nothing else,
checks what it built, and keeps plain arrays in its cache (``<cache>/data/watch-<sha>.npz``,
read back without pickle).

Samples are what the watch's IMU reports: int16 counts at +-8 g (4,096 per g) and +-2,000 deg/s
(16.4 per deg/s), in 2-s windows (100 samples) every second (50% overlap): 4,677 windows.

- Source: the right wrist of subjects 1-7. The first 60% of each recording trains the source
  models; the windows of its last 40% are the domain ``none`` (no window straddles the cut).
- Natural shifts: ``subject`` (subjects 8-10, right wrist) and ``wrist`` (subjects 1-7, left wrist).
- Sensor faults (cema_cli/corruptions/sensor.py) on the windows of ``none``, severities 1-5.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cema_cli.corruptions.sensor import SENSOR_SHIFTS, shift_windows
from cema_cli.data.cache import cache_dir, write_atomically
from cema_cli.data.memory import Domain, InMemoryDataset, seeded_pick
from cema_cli.errors import CemaError

PACKAGE = "seglearn"
PACKAGE_FILE = "data/watch_dataset.npy"
SOURCE_SHA256 = "eb122f23cdf06ef6bd6c6c5312958ec5cf9d038e2e6d457b8081662c75a42537"  # seglearn 1.2.5's file
INSTALL = "pip install 'seglearn==1.2.5'"

CLASSES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
CHANNELS = ("ax", "ay", "az", "wx", "wy", "wz")
RATE_HZ, WINDOW, HOP = 50, 100, 50
ACC_COUNTS_PER_G = 4096.0  # +-8 g full scale on int16
GYRO_COUNTS_PER_RAD_S = 16.4 * 180.0 / math.pi  # +-2,000 deg/s full scale on int16
COUNTS_PER_UNIT = (ACC_COUNTS_PER_G,) * 3 + (GYRO_COUNTS_PER_RAD_S,) * 3
RIGHT, LEFT = 1, 0  # seglearn's ``side``
SOURCE_SUBJECTS, NEW_SUBJECTS = tuple(range(1, 8)), (8, 9, 10)
TRAIN_SHARE = 0.6


# --- reading the package file once --------------------------------------------------------------

class ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays, dtypes and the byte strings inside them: any other global refuses."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # protocol 2 writes the arrays' bytes this way
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return self.ALLOWED[(module, name)]


def package_file() -> Path:
    """seglearn's watch_dataset.npy, found without importing seglearn (nor scikit-learn)."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.origin).parent / PACKAGE_FILE if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        where = f"{path} is missing" if path is not None else f"the {PACKAGE} package is not installed"
        raise CemaError(f"the watch dataset ships in seglearn's wheel, but {where}; install it: {INSTALL}.")
    return path


def read_package_file(data: bytes) -> dict[str, np.ndarray]:
    """The recordings of the package file's bytes as plain arrays: ``samples`` (all recordings
    end to end, float64 (T, 6)), ``starts`` (recording offsets, 141), ``label``, ``subject``, ``side``."""
    stream = io.BytesIO(data)
    np.lib.format.read_magic(stream)
    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    if shape != () or dtype != np.dtype(object):
        raise ValueError(f"a {dtype} array of shape {shape}, not one pickled dict")
    table = ArraysOnly(stream, encoding="latin1").load()
    table = table.item() if isinstance(table, np.ndarray) and table.shape == () else table
    return checked_recordings(table)


def checked_recordings(table: object) -> dict[str, np.ndarray]:
    if not isinstance(table, dict) or not {"X", "y", "subject", "side"} <= set(table):
        raise ValueError("not the dict of X, y, subject and side that seglearn documents")
    recordings = table["X"]
    if not all(isinstance(r, np.ndarray) and r.ndim == 2 and r.shape[1] == 6 and r.dtype.kind == "f" for r in recordings):
        raise ValueError("X is not a list of float (samples, 6) arrays")
    lengths = np.array([len(r) for r in recordings])
    columns = {k: np.asarray(table[k]) for k in ("y", "subject", "side")}
    if any(c.shape != lengths.shape or c.dtype.kind not in "iuf" for c in columns.values()):
        raise ValueError("y, subject and side do not give one number per recording")
    return {"samples": np.concatenate(recordings).astype(np.float64), "starts": np.concatenate([[0], np.cumsum(lengths)]),
            "label": columns["y"].astype(np.int64), "subject": columns["subject"].astype(np.int64),
            "side": columns["side"].astype(np.int64)}


def to_counts(samples: np.ndarray) -> np.ndarray:
    """Physical units -> the IMU's int16 counts, saturating at full scale as the sensor does."""
    counts = np.rint(samples * np.asarray(COUNTS_PER_UNIT))
    return np.clip(counts, -32768, 32767).astype(np.int16)


# --- the cache of plain arrays ------------------------------------------------------------------

CACHE_KEYS = {"samples": np.int16, "starts": np.int64, "label": np.int64, "subject": np.int64, "side": np.int64}


def cache_file() -> Path:
    return cache_dir() / "data" / f"watch-{SOURCE_SHA256[:12]}.npz"


def build_cache() -> Path:
    """Read the package file once (checked against seglearn 1.2.5's sha256) into the cache."""
    source = package_file()
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != SOURCE_SHA256:
        raise CemaError(f"{source} is not seglearn 1.2.5's watch_dataset.npy (sha256 differs); reinstall it: {INSTALL}.")
    try:
        arrays = read_package_file(data)
    except (pickle.UnpicklingError, ValueError, EOFError) as error:
        raise CemaError(f"{source} cannot be read as seglearn's recordings ({error}); reinstall it: {INSTALL}.") from None
    arrays["samples"] = to_counts(arrays["samples"])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return write_atomically(cache_file(), write)


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """The cached arrays, read without pickle; anything unreadable or unexpected is a corrupt cache."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in CACHE_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise corrupt(path, f"{type(error).__name__}: {error}") from None
    for key, dtype in CACHE_KEYS.items():
        if arrays[key].dtype != dtype:
            raise corrupt(path, f"{key} is {arrays[key].dtype}, not {np.dtype(dtype)}")
    starts = arrays["starts"]
    if starts[0] != 0 or starts[-1] != len(arrays["samples"]) or len(starts) != len(arrays["label"]) + 1 or np.any(np.diff(starts) < WINDOW):
        raise corrupt(path, "the recording offsets do not fit the samples")
    return arrays


def corrupt(path: Path, why: str) -> CemaError:
    return CemaError(f"the watch cache {path} is corrupt ({why}); delete it and rerun: cema rebuilds it from seglearn's file.")


@dataclass(frozen=True)
class Recordings:
    samples: torch.Tensor  # int16 (T, 6)
    starts: np.ndarray
    label: np.ndarray
    subject: np.ndarray
    side: np.ndarray


def prepare() -> Path:
    """The cache file, built from the package file when missing (``cema prepare``)."""
    path = cache_file()
    read_cache(path if path.is_file() else build_cache())
    return path


@lru_cache(maxsize=1)
def recordings() -> Recordings:
    """The cached recordings, built from the package file on first use."""
    path = cache_file()
    arrays = read_cache(path if path.is_file() else build_cache())
    return Recordings(torch.from_numpy(arrays["samples"]), arrays["starts"], arrays["label"], arrays["subject"], arrays["side"])


# --- windows, splits and domains ----------------------------------------------------------------

def window_starts(begin: int, end: int, hop: int = HOP) -> list[int]:
    """Starts of the 100-sample windows, one every ``hop`` samples, that fit in samples [begin, end)."""
    return list(range(begin, end - WINDOW + 1, hop))


def windows(rec: Recordings, picks: list[tuple[int, int, int]], hop: int = HOP, margin: int = 0) -> Domain:
    """(int16 windows (N, 6, 100 + 2 margin), labels) for (recording, first sample, end) spans:
    each window with ``margin`` samples of its recording on either side (the recording's first or
    last sample repeats beyond its ends)."""
    found = [(r, s) for r, begin, end in picks for s in window_starts(begin, end, hop)]
    offsets = torch.arange(-margin, WINDOW + margin)
    index = torch.stack([(s + offsets).clamp(0, rec.starts[r + 1] - rec.starts[r] - 1) + rec.starts[r] for r, s in found])
    labels = torch.as_tensor([int(rec.label[r]) for r, _ in found], dtype=torch.long)
    return rec.samples[index].permute(0, 2, 1).contiguous(), labels


def spans(rec: Recordings, subjects: tuple[int, ...], side: int, part: str) -> list[tuple[int, int, int]]:
    """The (recording, begin, end) spans of a split: ``train`` (first 60%), ``test`` (the rest), ``all``."""
    chosen = [r for r in range(len(rec.label)) if rec.subject[r] in subjects and rec.side[r] == side]
    lengths = np.diff(rec.starts)
    cut = {r: int(TRAIN_SHARE * lengths[r]) for r in chosen}
    bounds = {"train": lambda r: (0, cut[r]), "test": lambda r: (cut[r], lengths[r]), "all": lambda r: (0, lengths[r])}[part]
    return [(r, *bounds(r)) for r in chosen]


@lru_cache(maxsize=4)
def split(name: str) -> Domain:
    """``train``, ``none``, ``subject`` or ``wrist`` (module docstring)."""
    rec = recordings()
    picks = {"train": (SOURCE_SUBJECTS, RIGHT, "train"), "none": (SOURCE_SUBJECTS, RIGHT, "test"),
             "subject": (NEW_SUBJECTS, RIGHT, "all"), "wrist": (SOURCE_SUBJECTS, LEFT, "all")}[name]
    return windows(rec, spans(rec, *picks))


def training_windows(hop: int) -> Domain:
    """The source training windows cut every ``hop`` samples (the models train on overlapping ones)."""
    rec = recordings()
    return windows(rec, spans(rec, SOURCE_SUBJECTS, RIGHT, "train"), hop)


@lru_cache(maxsize=1)
def channel_std() -> torch.Tensor:
    """Each channel's standard deviation (physical units) on the source training windows."""
    samples, _ = split("train")
    return (samples.double() / torch.tensor(COUNTS_PER_UNIT, dtype=torch.float64).view(1, -1, 1)).std(dim=(0, 2))


FAULT_MARGIN = 50  # samples of context on either side of a window (what rate_jitter reads)


def faulty(fault: str, severity: int, seed: int) -> torch.Tensor:
    """The windows of ``none`` with a sensor fault: counts -> physical units -> fault -> counts."""
    rec = recordings()
    samples, _ = windows(rec, spans(rec, SOURCE_SUBJECTS, RIGHT, "test"), margin=FAULT_MARGIN)
    counts = torch.tensor(COUNTS_PER_UNIT, dtype=torch.float64).view(1, -1, 1)
    shifted = shift_windows(samples.double() / counts, channel_std(), fault, severity, seed, torch.arange(len(samples)), FAULT_MARGIN)
    return (shifted * counts).round().clamp(-32768, 32767).to(torch.int16)


class WatchDataset(InMemoryDataset):
    """Exercise recognition from a smartwatch; 7 classes; the natural shifts, then sensor faults."""

    name = "watch"
    modality = "signal"
    num_classes = len(CLASSES)
    preset = "cifar10"  # a small model and few classes: the published CIFAR-10 settings (Adam, margin 0.4)
    default_edge, default_cloud = "watch-edge", "watch-foundation"
    native_encoding = "int16"  # 2 bytes per sample value: 1,200 bytes per window
    encodings = ("int16", "float32")
    natural = ("subject", "wrist")
    shifts = SENSOR_SHIFTS
    shift_recipe = "sensor-1"

    def compute_domain(self, corruption: str, severity: int) -> Domain:
        if corruption in self.shifts:
            return faulty(corruption, severity, self.corruption_seed), split("none")[1]
        return split(corruption)

    def clean_samples(self, count: int, seed: int = 0) -> torch.Tensor:
        samples, _ = split("train")
        return samples[seeded_pick(count, len(samples), seed)]
