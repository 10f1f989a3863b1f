"""frost: the image blended with crops of frost photographs (spec sections 4.9 and 8).

The reference blends the image with crops of five frost photographs. They ship inside the
``imagecorruptions`` package (Apache-2.0; the ``photos`` extra): when it is
installed, its ``frost/`` files are read as the reference reads them (OpenCV, colour, alpha
dropped; CIFAR: OpenCV's 0.2x bilinear resize), without importing the package. Otherwise this
module generates five substitute textures at the photographs' sizes with the recipe of section 8
(a power-law Gaussian random field plus a layer of branched "ice needles", coloured with each
photograph's per-channel mean and standard deviation), from fixed seeds. They match the
photographs' first- and second-order statistics, not their exact look: results are "frost
(procedural)" and not comparable to published frost numbers; rows and metadata say which
textures were used (:func:`texture_source`). frost2 and frost3 are identical either way, keeping
the 5-way texture index and its mixture weights.

The texture index and crop offsets are NumPy's legacy ``randint`` draws on the sample's MT19937
stream, as the reference and imagecorruptions draw them, so with ``np.random.seed`` set to the
sample's seed imagecorruptions picks the same photograph and crop (its frost differs only by the
1.1x enlargement of section 6).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cema_cli.corruptions import constants as K
from cema_cli.corruptions._ops import in_chunks, lookup


@dataclass(frozen=True)
class TextureSpec:
    """Statistics of one reference photograph (section 8 table), measured on its 8-bit RGB."""

    name: str
    width: int
    height: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    slope: float  # magnitude of the radially averaged power-spectrum slope
    needle_scale: float  # typical needle length as a fraction of the short side
    ac_width: float  # 50% autocorrelation width in pixels
    red_decorrelate: bool = False  # frost1: channel correlation about 0.57


TEXTURES: tuple[TextureSpec, ...] = (
    TextureSpec("frost1", 900, 600, (78, 149, 166), (27, 16, 15), 1.5, 0.20, 29, red_decorrelate=True),
    TextureSpec("frost2", 560, 315, (201, 205, 214), (21, 22, 23), 1.9, 0.10, 13),
    TextureSpec("frost4", 527, 350, (138, 153, 165), (28, 28, 30), 1.5, 0.05, 5),
    TextureSpec("frost5", 660, 495, (112, 123, 135), (44, 43, 42), 2.0, 0.12, 10),
)
# The reference's index 0..4 selects frost1, frost2, frost3 (= frost2), frost4, frost5.
_INDEX_TO_TEXTURE = (0, 1, 1, 2, 3)
PHOTOGRAPHS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # frost6.jpg is never drawn
_SEED = 20190505  # fixed: the textures are part of the definition of "frost (procedural)"
CIFAR_DECIMATION = 5  # OpenCV's 0.2x bilinear resize keeps rows/columns 2, 7, 12, ...


def _power_law_field(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """Gaussian random field with power spectrum ~ f^-beta (random phases, zero mean, unit var)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = np.inf  # no DC component
    shape = (h, w // 2 + 1)
    spectrum = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    field = np.fft.irfft2(spectrum * f ** (-beta / 2), s=(h, w))
    return (field - field.mean()) / field.std()


def _segments(rng: np.random.Generator, spec: TextureSpec) -> np.ndarray:
    """Needles and their side branches as (K, 4) segments (x0, y0, x1, y1)."""
    short = min(spec.width, spec.height)
    count = int(300 * spec.width * spec.height / (560 * 315))
    length = short * np.clip(rng.normal(spec.needle_scale, spec.needle_scale / 3, count), 0.03, 0.20)
    angle = rng.uniform(0, np.pi, count)
    x0, y0 = rng.uniform(0, spec.width, count), rng.uniform(0, spec.height, count)
    segs = [np.stack([x0, y0, x0 + length * np.cos(angle), y0 + length * np.sin(angle)], axis=1)]
    branches = rng.integers(2, 7, count)
    owner = np.repeat(np.arange(count), branches)
    at = rng.uniform(0.1, 0.9, owner.size)  # where along the needle the branch starts
    side = rng.choice([-1.0, 1.0], owner.size)
    b_angle = angle[owner] + side * np.deg2rad(rng.uniform(45, 70, owner.size))
    b_len = length[owner] * (1 - at) * rng.uniform(0.2, 0.5, owner.size)
    bx = x0[owner] + at * length[owner] * np.cos(angle[owner])
    by = y0[owner] + at * length[owner] * np.sin(angle[owner])
    segs.append(np.stack([bx, by, bx + b_len * np.cos(b_angle), by + b_len * np.sin(b_angle)], axis=1))
    return np.concatenate(segs)


def _periodic_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur on the torus via the FFT (the texture wraps; no SciPy needed at run time)."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fx * fx + fy * fy))
    return np.fft.irfft2(np.fft.rfft2(image) * transfer, s=image.shape)


def _crystal_layer(rng: np.random.Generator, spec: TextureSpec) -> np.ndarray:
    """Anti-aliased 1-px needles (bilinear splats every half pixel), then blurred.

    Section 8 suggests a blur of sigma about 0.6; that leaves the texture's 50% autocorrelation
    width at 2-3 px, far below the photographs' 5-29 px, so the blur sigma is ac_width / 2
    (measured to land within about 20% of the table's widths).
    """
    h, w = spec.height, spec.width
    seg = _segments(rng, spec)
    lengths = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    steps = np.maximum(2, np.ceil(2 * lengths).astype(int))
    owner = np.repeat(np.arange(len(seg)), steps)
    t = (np.arange(owner.size) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps - 1, steps)
    px = seg[owner, 0] + t * (seg[owner, 2] - seg[owner, 0])
    py = seg[owner, 1] + t * (seg[owner, 3] - seg[owner, 1])
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    canvas = np.zeros(h * w)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = (ix + dx) % w, (iy + dy) % h  # wrap: the texture has no preferred border
        canvas += np.bincount(cy * w + cx, weights=0.5 * weight, minlength=h * w)
    sigma = max(0.6, spec.ac_width / 2)
    layer = _periodic_gaussian(np.minimum(canvas, 1.0).reshape(h, w), sigma)
    return (layer - layer.mean()) / layer.std()


def generate_texture(spec: TextureSpec, seed: int) -> np.ndarray:
    """Section 8 recipe: T = 0.6 B + 0.8 C normalised, coloured per channel; uint8 (H, W, 3) RGB."""
    rng = np.random.default_rng(seed)
    t = 0.6 * _power_law_field(rng, spec.height, spec.width, spec.slope) + 0.8 * _crystal_layer(rng, spec)
    t = (t - t.mean()) / t.std()
    channels = [t, t, t]
    if spec.red_decorrelate:  # an independent low-frequency field lowers the channel correlation
        low = _power_law_field(rng, spec.height, spec.width, 3.0)
        channels[0] = 0.57 * t + np.sqrt(1 - 0.57**2) * low
    rgb = np.stack([m + s * c for m, s, c in zip(spec.mean, spec.std, channels)], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


@lru_cache(maxsize=None)
def _texture_bank() -> tuple[np.ndarray, ...]:
    return tuple(generate_texture(spec, _SEED + i) for i, spec in enumerate(TEXTURES))


def photographs_folder() -> Path | None:
    """The ``frost/`` folder of an installed ``imagecorruptions`` package holding the five
    reachable photographs, or None. Found without importing the package (its import needs
    scikit-image, SciPy and pkg_resources)."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "frost"
    return folder if all((folder / name).is_file() for name in PHOTOGRAPHS) else None


def texture_source() -> str:
    """"photographs" when imagecorruptions' frost photographs are installed, else "procedural"."""
    return "photographs" if photographs_folder() is not None else "procedural"


def texture_label() -> str:
    """What the metadata records: the photographs with the package version, or the substitute."""
    if texture_source() == "procedural":
        return "frost (procedural)"
    from importlib.metadata import version

    return f"photographs (imagecorruptions {version('imagecorruptions')})"


def _read_photograph(path: Path, constants: str) -> np.ndarray:
    """Section 4.9 steps 2-3: OpenCV's 8-bit colour read (alpha dropped), BGR -> RGB; for the
    CIFAR constants OpenCV's 0.2x bilinear resize (a pure decimation at this factor)."""
    from cema_cli.corruptions._ops import opencv

    cv2 = opencv()
    texture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if texture is None:
        raise OSError(f"cannot read the frost photograph {path}; reinstall imagecorruptions")
    if constants == "cifar":
        texture = cv2.resize(texture, (0, 0), fx=0.2, fy=0.2)
    return np.ascontiguousarray(texture[..., ::-1].transpose(2, 0, 1))


def _procedural(constants: str) -> list[np.ndarray]:
    """The substitutes; CIFAR: OpenCV's 0.2x bilinear resize samples source position 5k + 2
    exactly, so it is a pure decimation (section 4.9 step 3); size round(0.2 * size) as OpenCV's."""
    bank = []
    for which in _INDEX_TO_TEXTURE:
        tex = _texture_bank()[which]
        if constants == "cifar":
            h, w = tex.shape[:2]
            rows, cols = int(round(h / CIFAR_DECIMATION)), int(round(w / CIFAR_DECIMATION))
            tex = tex[2::CIFAR_DECIMATION, 2::CIFAR_DECIMATION][:rows, :cols]
        bank.append(np.ascontiguousarray(tex.transpose(2, 0, 1)))
    return bank


@lru_cache(maxsize=None)
def _bank(constants: str, source: str) -> tuple[torch.Tensor, ...]:
    folder = photographs_folder() if source == "photographs" else None
    arrays = [_read_photograph(folder / name, constants) for name in PHOTOGRAPHS] if folder else _procedural(constants)
    return tuple(torch.from_numpy(a) for a in arrays)


def frost_textures(constants: str, source: str | None = None) -> tuple[torch.Tensor, ...]:
    """The five reachable textures (index 0..4) as uint8 (3, H, W) CPU tensors for a constants
    set, from ``source`` ("photographs" or "procedural"; default :func:`texture_source`)."""
    return _bank(constants, source or texture_source())


def crop_draws(g: torch.Generator, shapes: list[tuple[int, int]], h: int, w: int) -> tuple[int, int, int]:
    """(texture index, row offset, column offset) of one sample (section 4.9, random draws).

    NumPy's legacy ``randint`` on the MT19937 stream of the sample's fresh generator (torch's
    CPU generator is the same engine, seeded the same way, spec section 5): ``randint(5)``, then
    ``randint(0, Ht - H)`` and ``randint(0, Wt - W)``, exactly as the reference draws them.
    """
    draws = np.random.RandomState(g.initial_seed() & 0xFFFFFFFF)
    index = int(draws.randint(5))
    height, width = shapes[index]
    return index, int(draws.randint(0, height - h)), int(draws.randint(0, width - w))


def frost_max_side(constants: str) -> tuple[int, int]:
    """Largest (H, W) a crop can have: the crop offset range [0, size - S) must be non-empty
    (the same for both sources: the substitutes have the photographs' sizes)."""
    bank = frost_textures(constants)
    return min(t.shape[1] for t in bank) - 1, min(t.shape[2] for t in bank) - 1


@lru_cache(maxsize=32)
def _blend_table(ai: float, af: float) -> torch.Tensor:
    """uint8 result of truncate(clip(ai * U + af * F, 0, 255)) for every (U, F) level pair, row U.

    The per-pixel formula depends on the two levels only, so the table, computed with the same
    float64 operations, gives the same bytes as evaluating it pixel by pixel, in a fraction of
    the time. float64: ai * U + af * F often lands exactly on an integer level (float32 would
    flip it).
    """
    levels = torch.arange(256, dtype=torch.float64)
    blend = ai * levels[:, None] + af * levels[None, :]
    return blend.clamp_(0, 255).to(torch.uint8).flatten()


def frost(images: torch.Tensor, severity: int, constants: str, gens: list[torch.Generator]) -> torch.Tensor:
    """Section 4.9: clip(ai * U + af * crop, 0, 255) on the 0..255 scale, with the photographs
    or the procedural textures (:func:`texture_source`); the draws of :func:`crop_draws`. In
    chunks (in_chunks)."""
    ai, af = K.FROST[constants][severity - 1]
    arrays = [tex.numpy() for tex in frost_textures(constants)]  # NumPy slicing: less per-sample overhead
    shapes = [a.shape[1:] for a in arrays]
    h, w = images.shape[-2:]
    table = _blend_table(ai, af).to(images.device)

    def frost_chunk(chunk: torch.Tensor, chunk_gens: list[torch.Generator]) -> torch.Tensor:
        crops = np.empty(chunk.shape, dtype=np.uint8)
        for g, crop in zip(chunk_gens, crops):
            index, top, left = crop_draws(g, shapes, h, w)
            crop[...] = arrays[index][:, top:top + h, left:left + w]
        pair = chunk.to(torch.int32).mul_(256).add_(torch.from_numpy(crops).to(chunk.device))
        return lookup(table, pair)

    return in_chunks(images, gens, frost_chunk)
