"""Checkpoint files: reading a state_dict safely, loading it strictly, and the provenance that
every result row records (the resolved weights tag and the file's sha256)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cema_cli.errors import CemaError

# Wrappers that training scripts put around a state_dict, and the prefixes that DataParallel
# ("module."), RobustBench's normalising wrapper ("model.") and cema's Classifier ("net.") add.
WRAPPER_KEYS = ("state_dict", "model", "best_state")
PREFIXES = ("module.", "model.", "net.")
SAVE_HINT = "save it with torch.save(model.state_dict(), path)"


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from: ``label`` is what the rows record (``random-init``,
    ``checkpoint:<path>``, ``shipped:<digest>``, ``pretrained:IMAGENET1K_V1``, ...), ``file`` the
    checkpoint read (None for random weights)."""

    label: str
    file: Path | None = None

    def sha256(self) -> str:
        return file_sha256(self.file) if self.file is not None else ""


def file_sha256(path: Path) -> str:
    """The sha256 of a file, hashed once per (path, size, modification time)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file read with ``torch.load(weights_only=True)``: plain, or under one
    of WRAPPER_KEYS; a prefix of PREFIXES that every key carries is removed."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CemaError(f"checkpoint {file} does not exist; give the path of a saved state_dict.")
    try:
        obj: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise CemaError(f"cannot read checkpoint {file} with torch.load(weights_only=True) ({type(error).__name__}); {SAVE_HINT}.") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CemaError(f"checkpoint {file} holds no state_dict of tensors; {SAVE_HINT}.")
    for prefix in PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(net: nn.Module, path: str | Path, name: str, state: dict[str, torch.Tensor] | None = None) -> None:
    """Load a checkpoint strictly; mismatched keys or shapes are named in the error. BatchNorm's
    ``num_batches_tracked`` may be absent (files saved before PyTorch 0.4.1): torch fills it in."""
    state, expected = read_state_dict(path) if state is None else state, net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)) if keys]
    if problems:
        raise CemaError(f"checkpoint {path} does not fit {name}: {'; '.join(problems)}. "
                        "Check that the model name is the architecture the checkpoint was trained as.")
    net.load_state_dict(state, strict=False)  # strict in effect: every key was checked above
