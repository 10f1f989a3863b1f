"""Where cema keeps what it derives on first use: trained models, data read from package files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """$CEMA_CACHE, else $XDG_CACHE_HOME/cema, else ~/.cache/cema."""
    if os.environ.get("CEMA_CACHE"):
        return Path(os.environ["CEMA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cema"


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` then rename onto ``path``: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
