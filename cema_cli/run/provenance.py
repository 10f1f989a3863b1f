"""What produced a result, beyond its configuration: the code's git commit (and whether the
checkout had uncommitted changes) and the versions of the libraries that compute it. Recorded
in run.json and every result row. No torch import; each is looked up once per process."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

import cema_cli

# Column -> the distributions that may provide the library (the first one installed counts).
LIBRARIES = {"torch_version": ("torch",), "torchvision_version": ("torchvision",), "timm_version": ("timm",),
             "numpy_version": ("numpy",), "pillow_version": ("pillow", "Pillow"),
             "opencv_version": ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")}


@functools.cache
def code_version() -> dict[str, Any]:
    """``git_commit`` and ``git_dirty`` of the checkout cema runs from; both None when cema is
    not a git checkout's own package (an installed wheel, or git missing)."""
    package = Path(cema_cli.__file__).resolve().parent
    top = git(package, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "cema_cli" != package:  # a wheel inside someone else's repository
        return {"git_commit": None, "git_dirty": None}
    status = git(package, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git(package, "rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def git(folder: Path, *args: str) -> str | None:
    """A git command's output in ``folder``, or None when git is missing or fails."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def library_versions() -> dict[str, str | None]:
    """The installed version of each library that computes a result (None when not installed)."""
    return {column: next((v for v in map(installed, names) if v), None) for column, names in LIBRARIES.items()}


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """The code version and the library versions, as recorded in run.json and every row."""
    return {"cema_version": cema_cli.__version__, **code_version(), **library_versions()}
