"""A straightforward per-image NumPy/SciPy port of the reference corruptions (spec section 4).

Written independently of cema_cli.corruptions, following the reference scripts' structure
(one H x W x 3 image at a time, float64, SciPy/Pillow/OpenCV where the reference uses them),
with the random draws passed in explicitly so a test can feed the same numbers as cema's
generators. Used by the fidelity tests and, as the per-image baseline, by
benchmarks/bench_corruptions.py where the imagecorruptions package does not run.
Every function takes a uint8 H x W x 3 array and returns floats on the 0..255 scale (or uint8).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage


def to_uint8(y: np.ndarray) -> np.ndarray:
    """The reference writers' final cast: truncation."""
    return np.asarray(y).astype(np.uint8)


def gaussian(x: np.ndarray, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> np.ndarray:
    """scikit-image's gaussian on H x W (x C): per channel, never across channels."""
    if x.ndim == 3:
        return np.stack([ndimage.gaussian_filter(x[..., c], sigma, mode=mode, truncate=truncate) for c in range(x.shape[2])], -1)
    return ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)


def gaussian_noise(u, sigma, n):
    return np.clip(u / 255.0 + sigma * n, 0, 1) * 255


def speckle_noise(u, c, n):
    x = u / 255.0
    return np.clip(x + x * c * n, 0, 1) * 255


def impulse_noise(u, amount, hit_uniform, salt_uniform):
    x = u / 255.0
    out = np.where(hit_uniform < amount, (salt_uniform < 0.5).astype(float), x)
    return np.clip(out, 0, 1) * 255


def shot_noise(u, c, rng):
    return np.clip(rng.poisson(u / 255.0 * c) / c, 0, 1) * 255


def disk(radius, alias_blur):
    if radius <= 8:
        grid, window = np.arange(-8, 9), 3
    else:
        grid, window = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    d = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    d /= d.sum()
    t = np.arange(window) - window // 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    out = ndimage.correlate1d(d.astype(np.float64), g, axis=1, mode="mirror")
    return ndimage.correlate1d(out, g, axis=0, mode="mirror")


def defocus_blur(u, radius, alias_blur):
    k = disk(radius, alias_blur)
    x = u / 255.0
    return np.clip(np.stack([ndimage.correlate(x[..., c], k, mode="mirror") for c in range(3)], -1), 0, 1) * 255


def glass_blur(u, sigma, d, passes, offsets):
    """offsets: (passes, targets, 2) (dx, dy) in visiting order. The reference's sequential loop."""
    x = np.uint8(gaussian(u / 255.0, sigma) * 255)
    h, w = x.shape[:2]
    for p in range(passes):
        k = 0
        for row in range(h - d, d, -1):
            for col in range(w - d, d, -1):
                dx, dy = offsets[p, k]
                k += 1
                rp, cp = row + dy, col + dx
                x[row, col], x[rp, cp] = x[rp, cp], x[row, col]  # a copy: the RHS holds views
    return np.clip(gaussian(x / 255.0, sigma), 0, 1) * 255


def motion_blur_u8(u, radius, sigma, angle):
    """ImageMagick MotionBlurImage (one-sided half-Gaussian, edge clamp), Q16 -> 8-bit PNG."""
    taps = 2 * int(math.ceil(radius)) + 1
    w = np.exp(-(np.arange(taps) ** 2) / (2 * sigma**2))
    w /= w.sum()
    h, wd = u.shape[:2]
    acc = np.zeros(u.shape, dtype=np.float64)
    rows, cols = np.arange(h), np.arange(wd)
    for i in range(taps):
        ox = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        oy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        acc += w[i] * u[np.clip(rows + oy, 0, h - 1)][:, np.clip(cols + ox, 0, wd - 1)]
    return np.floor(np.round(acc * 257) / 257)


def clipped_zoom(x, z):
    """Section 3.2. The reference takes S from the first axis for both; for H != W each axis
    gets its own crop, zoom size and centred trim (equal to the reference when H = W).

    mode="nearest": SciPy's default "constant" mode returns 0 where the last output's source
    coordinate k (ch - 1) / (n - 1) rounds a hair past ch - 1 (e.g. 64 -> 160 columns, z = 2.5),
    a float artefact the spec's formula does not have; at 32 and 224 px such outputs are never
    kept (checked for every zoom factor), and inside the crop the modes agree."""
    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = ndimage.zoom(x[top:top + ch, left:left + cw], (z, z) + (1,) * (x.ndim - 2), order=1, mode="nearest")
    th, tw = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    return out[th:th + h, tw:tw + w]


def zoom_blur(u, factors):
    x = (u / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in factors:
        out += clipped_zoom(x, z)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def snow(u, params, normal, angle):
    mean, std, zoom, thr, radius, sigma, blend = params
    x = (u / 255.0).astype(np.float32)
    layer = mean + std * normal
    layer = clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < thr] = 0
    layer8 = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    flakes = motion_blur_u8(layer8.astype(np.float64), radius, sigma, angle)[..., None] / 255.0
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def plasma_fractal(mapsize, decay, uniforms):
    """The reference's diamond-square code; uniforms: flat U[0, 1) draws in consumption order."""
    stream = iter(np.asarray(uniforms, dtype=np.float64))
    a = np.empty((mapsize, mapsize), dtype=np.float64)
    a[0, 0] = 0
    step = mapsize
    wibble = 100.0

    def wibbled_mean(arr):
        r = np.array([next(stream) for _ in range(arr.size)]).reshape(arr.shape)
        return arr / 4 + wibble * (-wibble + 2 * wibble * r)

    while step >= 2:
        corner = a[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, shift=-1, axis=0)
        sq += np.roll(sq, shift=-1, axis=1)
        a[step // 2:mapsize:step, step // 2:mapsize:step] = wibbled_mean(sq)
        dr = a[step // 2:mapsize:step, step // 2:mapsize:step]
        ul = a[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        a[0:mapsize:step, step // 2:mapsize:step] = wibbled_mean(lt)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        a[step // 2:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)
        step //= 2
        wibble /= decay
    a -= a.min()
    return a / a.max()


def fog(u, c, decay, mapsize, uniforms):
    x = u / 255.0
    peak = x.max()
    h, w = x.shape[:2]
    x = x + c * plasma_fractal(mapsize, decay, uniforms)[:h, :w][..., None]
    return np.clip(x * peak / (peak + c), 0, 1) * 255


def frost(u, ai, af, crop):
    return np.clip(ai * u.astype(np.float64) + af * crop, 0, 255)


def contrast(u, c):
    x = u / 255.0
    mu = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - mu) * c + mu, 0, 1) * 255


def brightness(u, c):
    from skimage import color

    hsv = color.rgb2hsv(u / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1) * 255


def saturate(u, a, b):
    from skimage import color

    hsv = color.rgb2hsv(u / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1) * 255


def elastic_transform(u, params, jitter, ux, uy):
    import cv2

    alpha, sigma, _ = params
    x = (u / 255.0).astype(np.float32)
    h, w = x.shape[:2]
    # Section 4.13 step 2 in (x, y): the reference computes the centre from shape[:2] = (H, W)
    # and reads it as (x, y), which is the image centre only when H = W; for H != W the points
    # stay centred on the image: x from W, y from H.
    centre = np.float32((w, h)) // 2
    q = min(h, w) // 3
    pts1 = np.float32([centre + q, [centre[0] + q, centre[1] - q], centre - q])
    pts2 = pts1 + np.asarray(jitter, dtype=np.float32)
    m = cv2.getAffineTransform(pts1, pts2)
    x = cv2.warpAffine(x, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(ux, sigma, truncate=3, mode="reflect") if sigma else ux) * alpha
    dy = (gaussian(uy, sigma, truncate=3, mode="reflect") if sigma else uy) * alpha
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.stack([
        ndimage.map_coordinates(x[..., c], [yy + dy, xx + dx], order=1, mode="reflect") for c in range(3)
    ], -1)
    return np.clip(out, 0, 1) * 255


def pixelate(u, factor):
    """Section 4.14 with section 3.6's pass order: the reference's Pillow ran the horizontal
    BOX pass first at every shape; recent Pillow runs the vertical one first on images much
    taller than wide, so the two passes are separate calls here (each changes one axis)."""
    h, w = u.shape[:2]
    small_w, small_h = int(w * factor), int(h * factor)
    narrow = Image.fromarray(u).resize((small_w, h), Image.BOX)
    img = narrow.resize((small_w, small_h), Image.BOX)
    return np.asarray(img.resize((w, h), Image.BOX))


def jpeg_compression(u, quality):
    buf = io.BytesIO()
    Image.fromarray(u).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def gaussian_blur(u, sigma):
    return np.clip(gaussian(u / 255.0, sigma), 0, 1) * 255


def spatter(u, params, normal):
    import cv2

    mean, std, sigma, thr, strength, mud = params
    x = (u / 255.0).astype(np.float32)
    liquid = gaussian(mean + std * normal, sigma)
    liquid[liquid < thr] = 0
    if not mud:
        lq = np.floor(liquid * 255).astype(np.int64) % 256
        lq = lq.astype(np.uint8)
        dist = 255 - cv2.Canny(lq, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = lq * dist
        if m.max() == 0:
            return x * 255
        m = strength * m / m.max()
        colour = np.array([175, 238, 238]) / 255.0
        return np.clip(x + m[..., None] * colour, 0, 1) * 255
    blobs = gaussian((liquid > thr).astype(np.float32), strength)
    blobs[blobs < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0
    return np.clip(x * (1 - blobs[..., None]) + blobs[..., None] * colour, 0, 1) * 255
