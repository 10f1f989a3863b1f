"""Every per-severity constant of shared/spec/corruptions.md section 4, for both constant sets.

Each table maps a constants set ("imagenet" = 224 px, "cifar" = 32 px) to five entries, one per
severity 1..5. The section that defines each table is named in its comment.
"""

from __future__ import annotations

import numpy as np

# 4.1 gaussian_noise: sigma.
GAUSSIAN_NOISE = {"imagenet": (0.08, 0.12, 0.18, 0.26, 0.38), "cifar": (0.04, 0.06, 0.08, 0.09, 0.10)}
# 4.2 shot_noise: photons at white.
SHOT_NOISE = {"imagenet": (60, 25, 12, 5, 3), "cifar": (500, 250, 100, 75, 50)}
# 4.3 impulse_noise: amount.
IMPULSE_NOISE = {"imagenet": (0.03, 0.06, 0.09, 0.17, 0.27), "cifar": (0.01, 0.02, 0.03, 0.05, 0.07)}
# 4.4 defocus_blur: (disk radius, anti-alias sigma).
DEFOCUS_BLUR = {
    "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
}
# 4.5 glass_blur: (sigma, max shift d, passes).
GLASS_BLUR = {
    "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
}
# 4.6 motion_blur: (radius R, sigma s).
MOTION_BLUR = {
    "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
}
# 4.7 zoom_blur: the reference's np.arange(1, stop, step) calls; the lists must be used exactly as
# arange produces them (end points included through rounding), so they are built by arange here.
_ZOOM_ARANGE = {
    "imagenet": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    "cifar": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
}
ZOOM_BLUR = {
    key: tuple(tuple(float(z) for z in np.arange(1, stop, step)) for stop, step in rows)
    for key, rows in _ZOOM_ARANGE.items()
}
# 4.8 snow: (mean, std, zoom, threshold, motion radius, motion sigma, blend weight b).
SNOW = {
    "imagenet": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "cifar": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
}
# 4.9 frost: (image weight, frost weight).
FROST = {
    "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
}
# 4.10 fog: (strength c, decay d).
FOG = {
    "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
}
# 4.11 brightness: c added to V.
BRIGHTNESS = {"imagenet": (0.1, 0.2, 0.3, 0.4, 0.5), "cifar": (0.05, 0.1, 0.15, 0.2, 0.3)}
# 4.12 contrast: c.
CONTRAST = {"imagenet": (0.4, 0.3, 0.2, 0.1, 0.05), "cifar": (0.75, 0.5, 0.4, 0.3, 0.15)}
# 4.13 elastic_transform: (alpha, sigma, affine jitter a), the released data's 244 x multipliers.
ELASTIC = {
    "imagenet": tuple(
        (244 * a, 244 * s, 244 * j)
        for a, s, j in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
    ),
    "cifar": tuple(
        (32 * a, 32 * s, 32 * j)
        for a, s, j in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
    ),
}
# 4.14 pixelate: resize factor.
PIXELATE = {"imagenet": (0.6, 0.5, 0.4, 0.3, 0.25), "cifar": (0.95, 0.9, 0.85, 0.75, 0.65)}
# 4.15 jpeg_compression: quality.
JPEG = {"imagenet": (25, 18, 15, 10, 7), "cifar": (80, 65, 58, 50, 40)}
# 4.16 speckle_noise: c.
SPECKLE_NOISE = {"imagenet": (0.15, 0.2, 0.35, 0.45, 0.6), "cifar": (0.06, 0.1, 0.12, 0.16, 0.2)}
# 4.17 gaussian_blur: sigma.
GAUSSIAN_BLUR = {"imagenet": (1, 2, 3, 4, 6), "cifar": (0.4, 0.6, 0.7, 0.8, 1)}
# 4.18 spatter: (mean, std, liquid sigma, threshold, intensity or mud sigma, mud branch).
SPATTER = {
    "imagenet": (
        (0.65, 0.3, 4, 0.69, 0.6, False), (0.65, 0.3, 3, 0.68, 0.6, False), (0.65, 0.3, 2, 0.68, 0.5, False),
        (0.65, 0.3, 1, 0.65, 1.5, True), (0.67, 0.4, 1, 0.65, 1.5, True),
    ),
    "cifar": (
        (0.62, 0.1, 0.7, 0.7, 0.5, False), (0.65, 0.1, 0.8, 0.7, 0.5, False), (0.65, 0.3, 1, 0.69, 0.5, False),
        (0.65, 0.1, 0.7, 0.69, 0.6, True), (0.65, 0.1, 0.5, 0.68, 0.6, True),
    ),
}
# 4.19 saturate: (a, b) in S' = clip01(a S + b).
SATURATE = {
    "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}
