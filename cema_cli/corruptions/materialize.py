"""Write corrupted copies of a dataset to disk (``cema corrupt``; spec sections 2.1-2.2).

Two input kinds, two published layouts:

- a class-folder image tree ``<in>/<class>/<file>`` -> the ImageNet-C layout
  ``<out>/<corruption>/<severity>/<class>/<file>``;
- an ``.npy`` array (N, H, W, 3) uint8 with ``labels.npy`` beside it -> the CIFAR-10-C layout
  ``<out>/<corruption>.npy`` (all 5 severities, severity-major rows, as ``--dataset cifar10-c``
  and the published files have them) and ``<out>/labels.npy``.

As make_imagenet_c.py does (spec 2.1), images corrupted with the ImageNet constants are first
resized (shorter side 256, bilinear) and centre-cropped to 224 x 224, unless ``resize=False``
(``--no-resize``); the CIFAR constants take the images as they are (make_cifar_c.py).

Sample i (its position in the sorted class/file enumeration, or its row) is corrupted with the
randomness of (seed, corruption, severity, i) only, so the output is byte-identical for the
same seed whatever the worker count or batch size. Existing outputs are skipped (resumable),
so a folder whose record names another seed, constants set, JPEG quality or recipe version is
refused; every file is written to a temporary name and moved into place (atomic). A
``cema_corruption.json`` beside the outputs records that they are generated, with the constants
set, the seed and the JPEG quality, so they are never confused with the published files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cema_cli.errors import CemaError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
JPEG_SUFFIXES = (".jpeg", ".jpg")
DEFAULT_JPEG_QUALITY = 85  # JPEG inputs stay JPEG; the published ImageNet-C used quality 85
METADATA_NAME = "cema_corruption.json"
# Bumped when a corruption's output bytes for a seed change. 2: defocus_blur with the ImageNet
# constants (kernels over 5 x 5) runs OpenCV's float32 filter2D, moving about 3e-5 of the
# values by one level; every other corruption and every CIFAR-constants output is unchanged.
# 3: shot_noise samples Poisson counts by CDF inversion of one uniform per element (every
# value is a new draw); on images of 64 px and more the Gaussian filters of gaussian_blur,
# glass_blur and spatter are OpenCV's sepFilter2D (about 1e-4 of the values move by one level,
# and spatter's water mask follows its thresholds); zoom_blur resizes the batch as one
# channels-last image (about 1e-5 of the values move by one level). The embedded default's
# training corruptions at 32 px (speckle_noise, gaussian_blur, spatter, saturate) are unchanged.
# 4: on CPU images of 64 px and more (with OpenCV 5, which samples at the exact position)
# elastic_transform warps with OpenCV's warpAffine and remap and smooths its displacement
# fields in float32 (up to about 1e-3 of the values move by one level); glass_blur's bytes
# are unchanged.
# Also 4: defocus_blur with kernels of 130 taps and more (ImageNet severities 3-5, CPU) correlates
# through cv2.dft with a cached kernel spectrum instead of filter2D's own DFT (about 2e-5 of the
# values move by one level); every other corruption of the c-filters group is byte-identical.
# 5: pixelate enlarges by copying the samples Pillow's BOX copies at every size (4 used OpenCV's
# INTER_NEAREST_EXACT, which picks the next sample where (k + 0.5) n_in / n_out is a whole
# number: about 40% of size and severity pairs, e.g. 28 and 299 px with the ImageNet constants;
# 32 and 224 px were right and are unchanged).
# 6: pixelate shrinks with the horizontal BOX pass first at every shape (section 3.6): a
# single Pillow call (taken for one image at a time) runs the vertical pass first on images
# much taller than wide in recent Pillow (e.g. 64 x 30, 100 x 20 px), and such images got
# different bytes alone than in a batch; square and wide images are unchanged.
# 7: frost draws its texture index and crop offsets with NumPy's legacy randint on the sample's
# MT19937 stream (as the reference and imagecorruptions do), and blends the original frost
# photographs when imagecorruptions is installed (the record's "frost" says which); images for
# the ImageNet constants are resized to 256 and centre-cropped to 224 first (the record's
# "resize_crop"); an .npy input is written with all 5 severities.
RECIPE_VERSION = 7
IMAGENET_RESIZE, IMAGENET_CROP = 256, 224  # make_imagenet_c.py: Resize(256), CenterCrop(224)
SEVERITIES = (1, 2, 3, 4, 5)
Progress = Callable[[int], None]


@dataclass
class Summary:
    """What a materialisation did: counts of written and skipped images, and the layout."""

    layout: str
    written: int = 0
    skipped: int = 0
    outputs: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # source file -> why it was skipped


# ------------------------------------------------------------------------------ helpers


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _save_image(array: np.ndarray, path: Path, jpeg_quality: int | None) -> None:
    """Save an H x W x 3 uint8 image atomically; JPEG with Pillow defaults + optimize=True."""
    from PIL import Image

    tmp = _atomic_target(path)
    try:
        image = Image.fromarray(array, mode="RGB")
        if jpeg_quality is not None:
            image.save(tmp, format="JPEG", quality=int(jpeg_quality), optimize=True)
        else:
            image.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _recipe(layout: str, seed: int, constants: str, jpeg_quality: int | None, resize: bool) -> dict:
    """What decides a folder's bytes: one recipe per folder."""
    from cema_cli.corruptions.frost import texture_label

    return {"layout": layout, "seed": seed, "constants": constants, "jpeg_quality": jpeg_quality,
            "resize_crop": [IMAGENET_RESIZE, IMAGENET_CROP] if resize else None, "frost": texture_label(),
            "recipe_version": RECIPE_VERSION}


def _write_metadata(output: Path, corruptions: Sequence[str], severities: Sequence[int], recipe: dict) -> None:
    record = {
        "source": "generated",
        "corruptions": list(corruptions),
        "severities": sorted(severities),
        **recipe,
        "truncation": "floor",
        "libraries": _library_versions(),
    }
    path = output / METADATA_NAME
    earlier = _read_metadata(path)
    if earlier:  # a resumed or extended folder lists every corruption and severity it holds
        record["corruptions"] = list(dict.fromkeys([*earlier.get("corruptions", []), *corruptions]))
        record["severities"] = sorted({*earlier.get("severities", []), *severities})
    output.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_target(path)
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _read_metadata(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _refuse_other_recipe(output: Path, wanted: dict) -> None:
    """Existing outputs are skipped, so a folder written with another seed, constants set, JPEG
    quality, resize, frost textures or recipe version would end up holding two recipes' bytes
    under one record: refuse."""
    earlier = _read_metadata(output / METADATA_NAME)
    if not earlier:
        return
    differ = [f"{key} {earlier.get(key)!r} there, {value!r} now" for key, value in wanted.items() if earlier.get(key) != value]
    if differ:
        raise CemaError(f"{output} already holds corruptions made with other settings ({'; '.join(differ)}), and "
                        "existing files would be kept; write to a new output folder, or delete that one to remake it.")


def _library_versions() -> dict[str, str]:
    """The libraries whose kernels produce the bytes (Pillow's BOX, OpenCV's filters, warps and
    libjpeg, NumPy's MT19937 twin, torch): a recipe's bytes are reproduced with the same ones."""
    import PIL

    from cema_cli.corruptions._ops import opencv

    return {"torch": torch.__version__, "numpy": np.__version__, "Pillow": PIL.__version__,
            "opencv": opencv().__version__}


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_units(units: list[tuple], fn: Callable, workers: int, on_result: Callable) -> None:
    """Run fn(*unit) for every unit, in this process or over `workers` spawned processes."""
    if workers <= 1 or len(units) <= 1:
        for unit in units:
            on_result(unit, fn(*unit))
        return
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        pending = {pool.submit(fn, *unit): unit for unit in units}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_result(pending.pop(future), future.result())


# --------------------------------------------------------------------------- image tree


def _enumerate_tree(root: Path) -> list[tuple[str, Path]]:
    """(class name, file) for every image, classes and files sorted: the sample order."""
    samples = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            samples.append((class_dir.name, file))
    if not samples:
        raise CemaError(
            f"no images found under {root}; expected class folders <class>/<file> with "
            f"{', '.join(IMAGE_SUFFIXES)} files, or an .npy array."
        )
    return samples


def _output_name(file: Path, jpeg_quality: int | None) -> str:
    """Keep the file name; a non-JPEG file written as JPEG gets a .jpg suffix."""
    if jpeg_quality is not None and file.suffix.lower() not in JPEG_SUFFIXES:
        return file.stem + ".jpg"
    return file.name


def _as_rgb(image):
    """An 8-bit RGB PIL image. 16-bit greyscale (Pillow's I;16 modes) keeps its top 8 bits, as
    Pillow does for 16-bit colour (convert("RGB") would clip it to white); 32-bit integer and
    float pixels have no fixed range and are refused."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        raise ValueError(f"{image.mode!r} pixels (32-bit) have no fixed range; save the image with 8 or 16 bits per channel")
    return image.convert("RGB")


def imagenet_crop(image):
    """make_imagenet_c.py's preprocessing (spec 2.1): torchvision's Resize(256) (shorter side to
    256, bilinear) then CenterCrop(224) on the PIL image."""
    from torchvision.transforms import functional as F

    return F.center_crop(F.resize(image, IMAGENET_RESIZE), IMAGENET_CROP)


def _read_image(src: str, constants: str, resize: bool) -> tuple[np.ndarray, str] | str:
    """(H x W x 3 uint8, resolved constants set), resized and cropped for the ImageNet constants
    when ``resize``; or why the file cannot be read (skipped and counted, as the benchmark's
    loaders do with the same exceptions, data/loading.py)."""
    from PIL import Image

    from cema_cli.corruptions import constants_for_size

    try:
        with Image.open(src) as image:
            rgb = _as_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return " ".join(f"{type(error).__name__}: {error}".split())
    if constants == "auto":
        constants = constants_for_size(min(rgb.size))
    if resize and constants == "imagenet":
        rgb = imagenet_crop(rgb)
    return np.asarray(rgb), constants


def _tree_unit(name: str, severity: int, items: list[tuple[int, str, str]], seed: int,
               jpeg_quality: int | None, constants: str, resize: bool) -> tuple[int, dict[str, str]]:
    """Corrupt and save a chunk of tree images; images of equal size and constants are batched
    together. Returns (images written, unreadable source file -> why)."""
    import torch

    from cema_cli.corruptions import corrupt

    groups: dict[tuple[int, int, str], list[tuple[int, np.ndarray, Path, int | None]]] = {}
    unreadable: dict[str, str] = {}
    for index, src, dst in items:
        read = _read_image(src, constants, resize)
        if isinstance(read, str):
            unreadable[src] = read
            continue
        array, resolved = read
        quality = jpeg_quality
        if quality is None and Path(dst).suffix.lower() in JPEG_SUFFIXES:
            quality = DEFAULT_JPEG_QUALITY
        groups.setdefault((*array.shape[:2], resolved), []).append((index, array, Path(dst), quality))
    for (_, _, resolved), members in groups.items():
        images = torch.from_numpy(np.stack([m[1] for m in members])).permute(0, 3, 1, 2).contiguous()
        out = corrupt(images, name, severity, seed=seed, indices=[m[0] for m in members], constants=resolved)
        for (_, _, dst, quality), result in zip(members, out.permute(0, 2, 3, 1).numpy()):
            _save_image(np.ascontiguousarray(result), dst, quality)
    return len(items) - len(unreadable), unreadable


def _first_readable(samples: list[tuple[str, Path]], constants: str, resize: bool) -> None:
    """Refuse a tree in which no image can be read, before anything is written."""
    reasons = {}
    for _, file in samples:
        read = _read_image(str(file), constants, resize)
        if not isinstance(read, str):
            return
        reasons.setdefault(file, read)
    first, why = next(iter(reasons.items()))
    raise CemaError(f"none of the {len(samples)} images under {first.parent.parent} can be read (e.g. {first}: {why}); "
                    "check the files, or pass another --input.")


def _materialize_tree(input: Path, output: Path, corruptions: Sequence[str], severities: Sequence[int], seed: int,
                      jpeg_quality: int | None, workers: int, constants: str, resize: bool, batch_size: int,
                      progress: Progress | None, on_total: Callable[[int], None] | None) -> Summary:
    samples = _enumerate_tree(input)
    _first_readable(samples, constants, resize)
    summary = Summary(layout="imagenet-c")
    units = []
    for name in corruptions:
        for severity in severities:
            todo = []
            for index, (label, file) in enumerate(samples):
                dst = output / name / str(severity) / label / _output_name(file, jpeg_quality)
                if dst.exists():
                    summary.skipped += 1
                else:
                    todo.append((index, str(file), str(dst)))
            units += [(name, severity, list(chunk), seed, jpeg_quality, constants, resize) for chunk in _chunks(todo, batch_size)]
            summary.outputs.append(str(output / name / str(severity)))
    if on_total:
        on_total(sum(len(u[2]) for u in units))
    _write_metadata(output, corruptions, severities, _recipe("imagenet-c", seed, constants, jpeg_quality, resize))

    def done(unit: tuple, result: tuple[int, dict[str, str]]) -> None:
        count, unreadable = result
        summary.written += count
        summary.unreadable.update(unreadable)
        if progress:
            progress(len(unit[2]))

    _run_units(units, _tree_unit, workers, done)
    return summary


# --------------------------------------------------------------------------------- npy


def _load_npy(input: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        images = np.load(input, mmap_mode="r")
    except (ValueError, OSError) as error:
        raise CemaError(f"cannot read {input} as a NumPy array ({' '.join(str(error).split())}); pass an .npy file saved with np.save.") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise CemaError(
            f"{input} holds {images.dtype} {images.shape}; cema corrupt needs uint8 images shaped (N, H, W, 3) "
            "with values 0-255 (CIFAR-10 layout). Convert floats in [0, 1] with (x * 255).round().astype(np.uint8)."
        )
    labels_path = input.parent / "labels.npy"
    if not labels_path.exists():
        raise CemaError(f"no labels.npy beside {input}; save the {images.shape[0]} labels there (np.save) and retry.")
    try:
        labels = np.load(labels_path)
    except (ValueError, OSError) as error:
        raise CemaError(f"cannot read {labels_path} as a NumPy array ({' '.join(str(error).split())}); save the labels with np.save.") from None
    if labels.shape[:1] != images.shape[:1]:
        raise CemaError(f"{labels_path} holds {labels.shape[0]} labels for {images.shape[0]} images; they must match.")
    return images, labels


def _npy_rows(images: np.ndarray, resize: bool) -> np.ndarray:
    """Rows as corrupted: resized and cropped to 224 x 224 when ``resize`` (ImageNet constants)."""
    if not resize:
        return np.array(images)
    from PIL import Image

    return np.stack([np.asarray(imagenet_crop(Image.fromarray(row))) for row in images])


def _npy_unit(name: str, severity: int, start: int, stop: int, input: str, seed: int, constants: str,
              resize: bool) -> np.ndarray:
    import torch

    from cema_cli.corruptions import corrupt

    images = np.load(input, mmap_mode="r")
    chunk = torch.from_numpy(_npy_rows(images[start:stop], resize)).permute(0, 3, 1, 2).contiguous()
    out = corrupt(chunk, name, severity, seed=seed, indices=list(range(start, stop)), constants=constants)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def _materialize_npy(input: Path, output: Path, corruptions: Sequence[str], severities: Sequence[int], seed: int,
                     jpeg_quality: int | None, workers: int, constants: str, resize: bool, batch_size: int,
                     progress: Progress | None, on_total: Callable[[int], None] | None) -> Summary:
    """The CIFAR-10-C layout: every file holds the 5 severities (``severities`` is SEVERITIES)."""
    from cema_cli.corruptions import constants_for_size

    images, labels = _load_npy(input)
    if sorted(severities) != list(SEVERITIES):
        raise CemaError(f"an .npy input is written in the CIFAR-10-C layout, whose <corruption>.npy stacks all 5 severities "
                        f"(rows (s-1)N to sN-1), so it cannot hold only severities {list(severities)}; drop --severity.")
    n = images.shape[0]
    resolved = constants_for_size(min(images.shape[1:3])) if constants == "auto" else constants
    crop = resize and resolved == "imagenet"  # make_imagenet_c.py's resize and crop
    side = (IMAGENET_CROP, IMAGENET_CROP) if crop else images.shape[1:3]
    summary = Summary(layout="cifar-10-c")
    output.mkdir(parents=True, exist_ok=True)
    todo = []
    for name in corruptions:
        target = output / f"{name}.npy"
        summary.outputs.append(str(target))
        if target.exists():
            summary.skipped += n * len(severities)
        else:
            todo.append(name)
    if on_total:
        on_total(n * len(severities) * len(todo))
    _write_metadata(output, corruptions, severities, _recipe("cifar-10-c", seed, constants, jpeg_quality, resize))
    _write_labels(output / "labels.npy", np.tile(labels, len(SEVERITIES)))
    # One output file per corruption, filled chunk by chunk and moved into place when full.
    shape = (n * len(severities), *side, 3)
    temps = {name: _atomic_target(output / f"{name}.npy") for name in todo}
    arrays = {name: np.lib.format.open_memmap(temps[name], mode="w+", dtype=np.uint8, shape=shape) for name in todo}
    remaining = {name: n * len(severities) for name in todo}
    units = [
        (name, severity, start, min(start + batch_size, n), str(input), seed, resolved, crop)
        for name in todo for severity in severities for start in range(0, n, batch_size)
    ]

    def done(unit: tuple, result: np.ndarray) -> None:
        name, severity, start, stop = unit[:4]
        row = (severity - 1) * n  # severity-major, whatever order --severity listed them in
        if jpeg_quality is not None:
            result = _jpeg_rows(result, jpeg_quality)
        arrays[name][row + start:row + stop] = result
        summary.written += stop - start
        remaining[name] -= stop - start
        if remaining[name] == 0:
            arrays.pop(name).flush()
            os.replace(temps.pop(name), output / f"{name}.npy")
        if progress:
            progress(stop - start)

    try:
        _run_units(units, _npy_unit, workers, done)
    finally:
        arrays.clear()
        for tmp in temps.values():  # left only by an interrupted run
            tmp.unlink(missing_ok=True)
    return summary


def _write_labels(path: Path, labels: np.ndarray) -> None:
    """labels.npy of the CIFAR-10-C layout (the test labels once per severity), atomically."""
    if path.exists():
        return
    tmp = _atomic_target(path)
    with open(tmp, "wb") as handle:
        np.save(handle, labels)
    os.replace(tmp, path)


def _jpeg_rows(rows: np.ndarray, quality: int) -> np.ndarray:
    import torch

    from cema_cli.corruptions import jpeg_roundtrip

    out = jpeg_roundtrip(torch.from_numpy(rows).permute(0, 3, 1, 2).contiguous(), quality)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


# ------------------------------------------------------------------------------- entry


def _check_options(input: Path, output: Path, corruptions: Sequence[str], severities: Sequence[int], seed: int,
                   jpeg_quality: int | None, workers: int, constants: str) -> None:
    """Refuse bad arguments before anything is read or written (CemaError naming the fix)."""
    from cema_cli.corruptions import ALL, CONSTANT_SETS
    from cema_cli.errors import unknown_name

    if not input.exists():
        raise CemaError(f"input {input} does not exist; pass a class-folder image tree or an .npy file.")
    for name in corruptions:
        if name not in ALL:
            raise unknown_name("corruption", name, ALL)
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise CemaError(f"severities {list(severities)} must be taken from 1-5; pass e.g. --severity 1,2,3,4,5.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
        raise CemaError(f"seed {seed!r} is outside 0 to 2**63-1; pass a non-negative whole number, e.g. --seed 0.")
    if constants not in (*CONSTANT_SETS, "auto"):
        raise unknown_name("constants set", constants, (*CONSTANT_SETS, "auto"))
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise CemaError(f"JPEG quality {jpeg_quality} is outside 1-100; the published ImageNet-C used 85.")
    if workers < 1:
        raise CemaError(f"workers must be at least 1; got {workers}.")
    if output.exists() and not output.is_dir():
        raise CemaError(f"output {output} is a file; give a folder for the corrupted copies.")
    if input.is_file() and input.suffix.lower() != ".npy":
        raise CemaError(f"{input} is a file but not an .npy array; pass an .npy file or a class-folder image tree.")
    _refuse_output_in_input(input, output)


def _refuse_output_in_input(input: Path, output: Path) -> None:
    """The copies must not land in the input: a tree would read them as classes next time, and
    an .npy input's labels.npy would be taken for the output's."""
    source = input.resolve() if input.is_dir() else input.resolve().parent
    target = output.resolve()
    if target == source or source in target.parents:
        where = "is" if target == source else "is inside"
        raise CemaError(f"output {output} {where} the input folder {source}; the corrupted copies would mix with the "
                        "input images. Choose an output folder outside it.")


def materialize(
    input: Path,
    output: Path,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    *,
    seed: int = 0,
    jpeg_quality: int | None = None,
    workers: int = 1,
    constants: str = "auto",
    resize: bool = True,
    batch_size: int = 64,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Summary:
    """Materialise corrupted copies of ``input`` under ``output`` (layouts in the module doc).

    ``progress(k)`` is called after every k images written; ``on_total(n)`` once, first, with
    the number of images to write. ``jpeg_quality`` writes JPEG files at that quality (tree) or
    applies that JPEG round trip to the arrays (npy); without it files keep their format (JPEG
    inputs are written at quality 85, as ImageNet-C was). ``constants`` is "auto" (by the
    image's shorter side), "imagenet" or "cifar"; ``resize`` resizes images for the ImageNet
    constants to 256 and centre-crops them to 224 first. An .npy input takes all 5 severities.
    Raises CemaError for bad input.
    """
    input, output = Path(input), Path(output)
    _check_options(input, output, corruptions, severities, seed, jpeg_quality, workers, constants)
    layout = "cifar-10-c" if input.is_file() else "imagenet-c"
    _refuse_other_recipe(output, _recipe(layout, seed, constants, jpeg_quality, resize))
    args = (input, output, list(corruptions), list(severities), seed, jpeg_quality, workers, constants, resize,
            batch_size, progress, on_total)
    return _materialize_npy(*args) if input.is_file() else _materialize_tree(*args)
