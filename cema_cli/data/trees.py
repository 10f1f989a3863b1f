"""Reading dataset folders: layout checks with messages that say what was expected and what was
found, ImageNet class indices, and subsets (shared/spec/data.md, "Formats users have on disk")."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from cema_cli.data.loading import is_image
from cema_cli.errors import CemaError


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in sorted order, from timm's offline metadata; a wnid's position
    is its class index, the same order as torchvision's ImageNet indices (spec: ImageNet-C)."""
    from cema_cli.models import import_timm

    wnids = tuple(import_timm().data.ImageNetInfo().label_names())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids), "timm's ImageNet synset list changed"
    return wnids


@lru_cache(maxsize=1)
def imagenet_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def describe(folder: Path, limit: int = 6) -> str:
    """What a folder holds, for error messages: its first entries, folders marked with '/'."""
    if not folder.exists():
        return "nothing (the path does not exist)"
    if not folder.is_dir():
        return "a file, not a folder"
    entries = sorted(folder.iterdir())
    if not entries:
        return "an empty folder"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(names) + more


def require_root(data_root: str | None, dataset: str, layout: str) -> Path:
    """The data root as a folder, or a CemaError that shows the expected layout."""
    if data_root is None:
        raise CemaError(f"dataset {dataset!r} reads files: pass --data-root PATH, the folder laid out as {layout}.")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise CemaError(f"--data-root {root} is not a folder; {dataset} expects the layout {layout}.")
    return root


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_files(root: Path, classes: list[str]) -> list[str]:
    """Sorted ``<class>/<file>`` paths of the image files under each class folder."""
    return [f"{c}/{f.name}" for c in classes for f in sorted((root / c).iterdir()) if f.is_file() and is_image(f)]


def unknown_wnids(names: list[str]) -> list[str]:
    index = imagenet_index()
    return [n for n in names if n not in index]


def read_subset_file(path: Path) -> list[str]:
    """A list of ``<wnid>/<file>`` paths, one a line, in the file's order: RobustBench's
    ``helper_files/imagenet_test_image_ids.txt`` as it is (no newline after the last line), and
    lists with blank lines, ``#`` comments, extra columns or leading folders (so
    ``val/n01440764/x.JPEG 0`` reads as ``n01440764/x.JPEG``). Callers that stream the images
    (the ImageNet-C loader) take the list from here."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CemaError(f"cannot read the --subset file {path} ({error}); give a text file of <wnid>/<file> lines.") from None
    entries = [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    picked = ["/".join(Path(e).parts[-2:]) for e in entries]
    if not picked or any(len(Path(p).parts) != 2 for p in picked):
        raise CemaError(f"--subset file {path} must list <wnid>/<file> paths, one a line (e.g. n01440764/ILSVRC2012_val_00000293.JPEG).")
    return picked


def choose_subset(files: list[str], subset: str | None, seed: int, where: Path) -> list[str]:
    """All files, a seeded choice of ``subset`` of them (a count), or those a subset file lists.
    The choice depends on the file names and the seed only, so every domain gets the same images."""
    if subset is None:
        return files
    if subset.isdigit():
        count = int(subset)
        if not 1 <= count <= len(files):
            raise CemaError(f"--subset {count} is not between 1 and the {len(files)} images in {where}.")
        chosen = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count]
        return [files[i] for i in sorted(chosen.tolist())]
    path = Path(subset).expanduser()
    if not path.is_file():
        raise CemaError(f"--subset {subset!r} is neither a count nor an existing file listing <wnid>/<file> paths "
                        "(e.g. RobustBench's 5,000-image imagenet_test_image_ids.txt; see the README).")
    wanted, present = read_subset_file(path), set(files)
    missing = [p for p in wanted if p not in present]
    if missing:
        raise CemaError(f"{len(missing)} image(s) of the --subset file {path} are not in {where}, e.g. {missing[0]}; "
                        "check --data-root and the list.")
    return sorted(set(wanted))
