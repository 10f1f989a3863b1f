"""Fidelity: each corruption's defining property against shared/spec/corruptions.md.

Random corruptions are checked by replaying the same per-sample generators into an independent
per-image NumPy/SciPy/Pillow/OpenCV port of the reference (reference_numpy.py); deterministic
ones by direct comparison. float32 (ours) vs float64 (reference) may move a truncated value by
one level, hence the small tolerances of assert_close_u8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_numpy as ref
from cema_cli.corruptions import constants as K
from cema_cli.corruptions import corrupt, jpeg_roundtrip, sample_generators
from cema_cli.corruptions._ops import clipped_zoom, motion_blur_u8, plasma_fractal, set_saturation
from cema_cli.corruptions.blur import disk_kernel
from cema_cli.corruptions.digital import _opencv_samples_exactly
from cema_cli.corruptions.frost import TEXTURES, _texture_bank, frost_textures
from corruption_helpers import assert_close_u8, batch, hwc

SEED = 7


def run(images, name, severity, constants, indices=None):
    indices = list(range(len(images))) if indices is None else indices
    return corrupt(images, name, severity, seed=SEED, indices=indices, constants=constants)


def gens_for(name, severity, count):
    return sample_generators(SEED, name, severity, list(range(count)))


# ------------------------------------------------------------------------------ noise


@pytest.mark.parametrize("constants", ["cifar", "imagenet"])
def test_gaussian_noise_std_per_severity(constants):
    flat = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    for severity, sigma in enumerate(K.GAUSSIAN_NOISE[constants], start=1):
        out = run(flat, "gaussian_noise", severity, constants).numpy() / 255.0
        # Untruncated noise has std sigma; clipping only matters for the largest sigmas at 0.5.
        x = 128 / 255.0
        draws = np.random.default_rng(0).normal(size=400_000)
        expected = np.std(np.floor(np.clip(x + sigma * draws, 0, 1) * 255) / 255.0)
        assert abs(out.std() - expected) < 0.04 * expected, (severity, out.std(), expected)


def test_gaussian_and_speckle_match_reference_formula():
    images = batch(32, 3)
    for name, table, fn in (("gaussian_noise", K.GAUSSIAN_NOISE, ref.gaussian_noise), ("speckle_noise", K.SPECKLE_NOISE, ref.speckle_noise)):
        for severity in (1, 5):
            out = run(images, name, severity, "cifar")
            gens = gens_for(name, severity, 3)
            for i, g in enumerate(gens):
                n = torch.randn((3, 32, 32), generator=g).numpy().astype(np.float64).transpose(1, 2, 0)
                expected = ref.to_uint8(fn(hwc(images[i]), table["cifar"][severity - 1], n))
                assert_close_u8(hwc(out[i]), expected)


@pytest.mark.parametrize("constants,severity", [("imagenet", 1), ("imagenet", 5), ("cifar", 1), ("cifar", 5)])
def test_shot_noise_inverts_the_poisson_cdf(constants, severity):
    """Each count is the Poisson(c x) quantile of the element's own U[0, 1) draw (float64, in
    the sample's generator order), whatever the guide table does to find it."""
    stats = pytest.importorskip("scipy.stats")
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    out = run(images, "shot_noise", severity, constants)
    c = K.SHOT_NOISE[constants][severity - 1]
    for i, g in enumerate(gens_for("shot_noise", severity, 2)):
        u = torch.rand((3, 16, 16), generator=g, dtype=torch.float64).numpy()
        counts = stats.poisson.ppf(u, images[i].numpy().astype(np.float64) / 255.0 * c)
        expected = (np.clip(counts.astype(np.float32) / np.float32(c), 0, 1) * np.float32(255)).astype(np.uint8)
        np.testing.assert_array_equal(out[i].numpy(), expected)


def test_shot_noise_mean_and_variance():
    for value in (64, 192):
        flat = torch.full((4, 3, 32, 32), value, dtype=torch.uint8)
        c = K.SHOT_NOISE["imagenet"][2]  # 12 photons at white: strong, easy to measure
        out = run(flat, "shot_noise", 3, "imagenet").numpy().astype(np.float64)
        expected = ref.to_uint8(ref.shot_noise(np.full((200, 200, 3), value, np.uint8), c, np.random.default_rng(1)))
        assert abs(out.mean() - expected.mean()) < 3.0
        assert abs(out.std() - expected.std()) < 0.06 * expected.std()


def test_impulse_noise_replay_and_rate():
    images = batch(32, 2)
    amount = K.IMPULSE_NOISE["imagenet"][4]
    out = run(images, "impulse_noise", 5, "imagenet")
    for i, g in enumerate(gens_for("impulse_noise", 5, 2)):
        fields = torch.rand((2, 3, 32, 32), generator=g).numpy()
        expected = ref.to_uint8(ref.impulse_noise(hwc(images[i]), amount, fields[0].transpose(1, 2, 0), fields[1].transpose(1, 2, 0)))
        assert np.array_equal(hwc(out[i]), expected)
    changed = (out != images).float().mean().item()
    assert abs(changed - amount) < 0.03  # the image has no 0/255 values, so every hit shows


# ------------------------------------------------------------------------------- blur


def test_defocus_kernel_sums_match_spec():
    sums = [disk_kernel(*K.DEFOCUS_BLUR["imagenet"][s]).sum() for s in range(5)]
    np.testing.assert_allclose(sums, [1, 1, 1, 1.01297, 1.01079], atol=6e-6)
    for s in range(5):
        np.testing.assert_allclose(disk_kernel(*K.DEFOCUS_BLUR["cifar"][s]).sum(), 1, atol=1e-6)


def test_defocus_cifar_degenerate_kernels():
    centre = [disk_kernel(*K.DEFOCUS_BLUR["cifar"][s])[8, 8] for s in range(3)]
    np.testing.assert_allclose(centre, [0.845, 0.619, 0.445], atol=1e-3)
    plus = disk_kernel(*K.DEFOCUS_BLUR["cifar"][3])
    np.testing.assert_allclose(plus[7:10, 7:10], [[0, 0.2, 0], [0.2, 0.2, 0.2], [0, 0.2, 0]], atol=1e-4)
    box = disk_kernel(*K.DEFOCUS_BLUR["cifar"][4])
    np.testing.assert_allclose(box[7:10, 7:10], np.full((3, 3), 1 / 9), atol=1e-6)


def test_defocus_kernel_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    for radius, alias in K.DEFOCUS_BLUR["imagenet"] + K.DEFOCUS_BLUR["cifar"]:
        grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
        xx, yy = np.meshgrid(grid, grid)
        d = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
        d /= d.sum()
        window = 3 if radius <= 8 else 5
        expected = cv2.GaussianBlur(d, ksize=(window, window), sigmaX=alias)
        np.testing.assert_allclose(disk_kernel(radius, alias), expected, atol=1e-6)


def test_defocus_impulse_response_is_the_kernel():
    """A single bright pixel in the middle of a black image spreads into the disk kernel."""
    img = torch.zeros((1, 3, 64, 64), dtype=torch.uint8)
    img[0, :, 32, 32] = 255
    out = run(img, "defocus_blur", 3, "imagenet")[0, 0].numpy()
    kernel = disk_kernel(*K.DEFOCUS_BLUR["imagenet"][2])
    expected = np.zeros((64, 64))
    expected[24:41, 24:41] = kernel[::-1, ::-1]  # convolution of an impulse = flipped kernel
    assert np.array_equal(out, np.floor(np.clip(expected, 0, 1) * 255 + 1e-9).astype(np.uint8)) or (
        np.abs(out.astype(int) - np.floor(expected * 255).astype(int)).max() <= 1
    )
    assert out.sum() > 0 and out[24:41, 24:41].sum() == out.sum()


@pytest.mark.parametrize("constants,side,severities", [("cifar", 32, (1, 3, 5)), ("imagenet", 224, (5,))])
def test_defocus_matches_reference(constants, side, severities):
    images = batch(side, 1)
    for severity in severities:
        out = run(images, "defocus_blur", severity, constants)
        expected = ref.to_uint8(ref.defocus_blur(hwc(images[0]), *K.DEFOCUS_BLUR[constants][severity - 1]))
        assert_close_u8(hwc(out[0]), expected)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_gaussian_blur_matches_scipy(severity):
    images = batch(32, 2)
    out = run(images, "gaussian_blur", severity, "cifar")
    for i in range(2):
        expected = ref.to_uint8(ref.gaussian_blur(hwc(images[i]), K.GAUSSIAN_BLUR["cifar"][severity - 1]))
        assert_close_u8(hwc(out[i]), expected)


def test_gaussian_blur_impulse_is_separable_gaussian():
    img = torch.zeros((1, 3, 64, 64), dtype=torch.uint8)
    img[0, :, 32, 32] = 255
    out = run(img, "gaussian_blur", 1, "imagenet")[0, 0].numpy().astype(int)  # sigma 1, radius 4
    t = np.arange(-4, 5)
    g = np.exp(-(t**2) / 2.0)
    g /= g.sum()
    expected = np.zeros((64, 64))
    expected[28:37, 28:37] = np.outer(g, g)
    assert np.abs(out - np.floor(expected * 255)).max() <= 1
    assert out[:28].sum() == 0 and out[37:].sum() == 0  # radius int(4 * 1 + 0.5) = 4


@pytest.mark.parametrize("constants,side,severity", [("cifar", 32, 1), ("cifar", 32, 5), ("imagenet", 48, 4)])
def test_glass_blur_matches_sequential_loop(constants, side, severity):
    """The parallel pointer-jumping form equals the reference's sequential copy loop."""
    images = batch(side, 2)
    sigma, d, passes = K.GLASS_BLUR[constants][severity - 1]
    out = run(images, "glass_blur", severity, constants)
    count = (side - 2 * d) ** 2
    for i, g in enumerate(gens_for("glass_blur", severity, 2)):
        offsets = torch.randint(-d, d, (passes, count, 2), generator=g).numpy()
        expected = ref.to_uint8(ref.glass_blur(hwc(images[i]), sigma, d, passes, offsets))
        assert_close_u8(hwc(out[i]), expected)


@pytest.mark.parametrize("side", [48, 64])
def test_glass_blur_unfinished_chains_match_sequential_loop(side, monkeypatch):
    """With no full pointer jumps every chain goes through the per-pointer loop that normally
    only finishes the rare long chains; the result still equals the sequential loop (64 px takes
    the per-image OpenCV path)."""
    from cema_cli.corruptions import blur

    monkeypatch.setattr(blur, "_GLASS_FULL_JUMPS", 0)
    images = batch(side, 2)
    sigma, d, passes = K.GLASS_BLUR["imagenet"][4]
    out = run(images, "glass_blur", 5, "imagenet")
    for i, g in enumerate(gens_for("glass_blur", 5, 2)):
        offsets = torch.randint(-d, d, (passes, (side - 2 * d) ** 2, 2), generator=g).numpy()
        expected = ref.to_uint8(ref.glass_blur(hwc(images[i]), sigma, d, passes, offsets))
        assert_close_u8(hwc(out[i]), expected)


def test_glass_blur_copies_existing_values():
    """CIFAR severity 1 has no blur (radius 0): every output value already existed in the input,
    and copying (not swapping) loses some of them."""
    rng = np.random.default_rng(3)
    img = torch.from_numpy(rng.integers(0, 256, (1, 3, 32, 32), dtype=np.uint8))
    out = run(img, "glass_blur", 1, "cifar")
    pixels_in = {tuple(p) for p in img[0].reshape(3, -1).T.tolist()}
    pixels_out = {tuple(p) for p in out[0].reshape(3, -1).T.tolist()}
    assert pixels_out <= pixels_in
    assert len(pixels_out) < len(pixels_in)
    assert torch.equal(out[0, :, 0, :], img[0, :, 0, :])  # row 0 is never a target (d = 1)


def test_motion_blur_trail_weights():
    """Angle 0: a bright pixel leaves a trail to the LEFT with the half-Gaussian weights."""
    img = torch.zeros((1, 1, 9, 40), dtype=torch.float32)
    img[0, 0, 4, 30] = 255
    out = motion_blur_u8(img, 10, 3, torch.tensor([0.0]))[0, 0]
    w = np.exp(-(np.arange(21) ** 2) / 18.0)
    w /= w.sum()
    expected = np.floor(np.round(255 * 257 * w) / 257)
    np.testing.assert_array_equal(out[4, 30 - np.arange(21)].numpy(), expected)
    assert out[4, 31:].sum() == 0 and out[:4].sum() == 0


@pytest.mark.parametrize("constants,side,severity", [("cifar", 32, 1), ("cifar", 32, 5), ("imagenet", 64, 2)])
def test_motion_blur_matches_reference(constants, side, severity):
    images = batch(side, 2)
    out = run(images, "motion_blur", severity, constants)
    for i, g in enumerate(gens_for("motion_blur", severity, 2)):
        angle = float(-45 + 90 * torch.rand((), generator=g, dtype=torch.float64))
        expected = ref.motion_blur_u8(hwc(images[i]).astype(np.float64), *K.MOTION_BLUR[constants][severity - 1], angle)
        assert_close_u8(hwc(out[i]), expected.astype(np.uint8))


def test_zoom_factor_one_is_identity():
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(clipped_zoom(x, 1.0), x)


@pytest.mark.parametrize("side,factor", [(224, 3.0), (224, 4.5), (32, 2.25), (32, 1.75), (32, 1.06)])
def test_clipped_zoom_matches_scipy(side, factor):
    x = np.random.default_rng(0).random((side, side, 1)).astype(np.float64)
    ours = clipped_zoom(torch.from_numpy(x).permute(2, 0, 1)[None], factor)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref.clipped_zoom(x, factor), atol=1e-12)


@pytest.mark.parametrize("constants,side", [("cifar", 32), ("imagenet", 224)])
def test_zoom_blur_matches_reference(constants, side):
    images = batch(side, 1)
    for severity in (1, 5) if side == 32 else (3,):
        out = run(images, "zoom_blur", severity, constants)
        expected = ref.to_uint8(ref.zoom_blur(hwc(images[0]), K.ZOOM_BLUR[constants][severity - 1]))
        assert_close_u8(hwc(out[0]), expected)


# ---------------------------------------------------------------------------- weather


@pytest.mark.parametrize("constants,side,severity", [("cifar", 32, 1), ("cifar", 32, 4), ("imagenet", 224, 3)])
def test_snow_matches_reference(constants, side, severity):
    images = batch(side, 1)
    out = run(images, "snow", severity, constants)
    g = gens_for("snow", severity, 1)[0]
    normal = torch.randn((1, side, side), generator=g)[0].numpy().astype(np.float64)
    angle = float(-135 + 90 * torch.rand((), generator=g, dtype=torch.float64))
    expected = ref.to_uint8(ref.snow(hwc(images[0]), K.SNOW[constants][severity - 1], normal, angle))
    assert_close_u8(hwc(out[0]), expected, max_diff=2, max_fraction=0.02)


def test_plasma_fractal_matches_reference_and_range():
    draws = torch.rand((2, 32 * 32 - 1), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    maps = plasma_fractal(draws, 32, 2.5).numpy()
    for i in range(2):
        np.testing.assert_allclose(maps[i], ref.plasma_fractal(32, 2.5, draws[i].numpy()), atol=1e-12)
        assert maps[i].min() == 0.0 and maps[i].max() == 1.0


@pytest.mark.parametrize("constants,side,severity", [("cifar", 32, 2), ("cifar", 32, 5), ("imagenet", 224, 1)])
def test_fog_matches_reference(constants, side, severity):
    images = batch(side, 1)
    out = run(images, "fog", severity, constants)
    mapsize = 32 if side == 32 else 256
    g = gens_for("fog", severity, 1)[0]
    uniforms = torch.rand(mapsize * mapsize - 1, generator=g, dtype=torch.float64).numpy()
    c, decay = K.FOG[constants][severity - 1]
    expected = ref.to_uint8(ref.fog(hwc(images[0]), c, decay, mapsize, uniforms))
    assert_close_u8(hwc(out[0]), expected)


@pytest.fixture(params=["photographs", "procedural"])
def frost_source(request, monkeypatch):
    """Run a frost test with the photographs (imagecorruptions installed) and with the substitute."""
    from cema_cli.corruptions import frost

    if request.param == "photographs" and frost.photographs_folder() is None:
        pytest.skip("imagecorruptions (the frost photographs) is not installed")
    if request.param == "procedural":
        monkeypatch.setattr(frost, "photographs_folder", lambda: None)
    return request.param


@pytest.mark.parametrize("constants,side", [("cifar", 32), ("imagenet", 224)])
def test_frost_blend_and_crop(constants, side, frost_source):
    images = batch(side, 2)
    out = run(images, "frost", 3, constants)
    bank = frost_textures(constants, frost_source)
    ai, af = K.FROST[constants][2]
    for i, g in enumerate(gens_for("frost", 3, 2)):
        # Section 4.9's draws with NumPy's legacy generator, as the reference makes them.
        draws = np.random.RandomState(g.initial_seed() & 0xFFFFFFFF)
        tex = bank[draws.randint(5)]
        top, left = draws.randint(0, tex.shape[1] - side), draws.randint(0, tex.shape[2] - side)
        crop = hwc(tex[:, top:top + side, left:left + side]).astype(np.float64)
        assert np.array_equal(hwc(out[i]), ref.to_uint8(ref.frost(hwc(images[i]), ai, af, crop)))


def test_frost_records_which_textures_it_used(frost_source):
    from cema_cli.corruptions import generated_source

    expected = "generated" if frost_source == "photographs" else "generated, procedural frost"
    assert generated_source("frost") == expected and generated_source("fog") == "generated"


@pytest.mark.parametrize("source", ["photographs", "procedural"])
def test_frost_cifar_textures_are_decimated_by_five(source):
    from cema_cli.corruptions.frost import photographs_folder

    if source == "photographs" and photographs_folder() is None:
        pytest.skip("imagecorruptions (the frost photographs) is not installed")
    full, small = frost_textures("imagenet", source), frost_textures("cifar", source)
    assert [tuple(t.shape[1:]) for t in full] == [(600, 900), (315, 560), (315, 560), (350, 527), (495, 660)]
    sizes = [tuple(t.shape[1:]) for t in small]
    assert sizes == [(120, 180), (63, 112), (63, 112), (70, 105), (99, 132)]
    for f, s in zip(full, small):
        assert torch.equal(s, f[:, 2::5, 2::5][:, : s.shape[1], : s.shape[2]])
    assert torch.equal(full[1], full[2])  # frost2 = frost3, as in the reference


def test_frost_photographs_are_read_as_the_reference_reads_them():
    """Section 4.9 step 2: OpenCV's colour read (the PNGs' alpha dropped), BGR -> RGB."""
    from cema_cli.corruptions.frost import PHOTOGRAPHS, photographs_folder

    folder = photographs_folder()
    if folder is None:
        pytest.skip("imagecorruptions (the frost photographs) is not installed")
    import cv2

    for name, tex in zip(PHOTOGRAPHS, frost_textures("imagenet", "photographs")):
        assert np.array_equal(hwc(tex), cv2.imread(str(folder / name))[..., ::-1])
    frost2 = hwc(frost_textures("imagenet", "photographs")[1]).reshape(-1, 3).astype(float)
    np.testing.assert_allclose(frost2.mean(0), (201, 205, 214), atol=1)  # section 8's table


def test_frost_procedural_texture_statistics():
    """Section 8: the substitute matches each photograph's per-channel mean/std and detail scale."""
    for spec, tex in zip(TEXTURES, _texture_bank()):
        assert tex.shape == (spec.height, spec.width, 3)
        pixels = tex.reshape(-1, 3).astype(np.float64)
        np.testing.assert_allclose(pixels.mean(0), spec.mean, atol=3)
        np.testing.assert_allclose(pixels.std(0), spec.std, rtol=0.15)
        grey = tex.astype(np.float64).mean(-1)
        f = np.fft.fft2(grey - grey.mean())
        ac = np.fft.ifft2(np.abs(f) ** 2).real
        width = np.argmax(ac[0] / ac[0, 0] < 0.5)
        assert 0.6 * spec.ac_width <= width <= 1.5 * spec.ac_width, (spec.name, width)


def test_frost_textures_are_deterministic():
    from cema_cli.corruptions.frost import generate_texture

    assert np.array_equal(generate_texture(TEXTURES[2], 11), generate_texture(TEXTURES[2], 11))


# ---------------------------------------------------------------------------- digital


@pytest.mark.parametrize("constants", ["cifar", "imagenet"])
def test_brightness_and_saturate_match_skimage_hsv(constants):
    """The closed forms equal scikit-image's HSV round trip to float precision; after truncation
    they agree to one level (results exactly on an integer level depend on rounding order)."""
    pytest.importorskip("skimage")
    from cema_cli.corruptions._ops import add_value

    images = batch(32, 2)
    images[1, :, :4, :4] = 0  # black pixels become grey under brightness
    images[1, :, 4:8, :4] = 255  # white pixels get tinted red by saturate's b
    x = images.double() / 255.0
    for severity in range(1, 6):
        c = K.BRIGHTNESS[constants][severity - 1]
        a, b = K.SATURATE[constants][severity - 1]
        out_b = run(images, "brightness", severity, constants)
        out_s = run(images, "saturate", severity, constants)
        for i in range(2):
            expected_b = ref.brightness(hwc(images[i]), c)
            expected_s = ref.saturate(hwc(images[i]), a, b)
            np.testing.assert_allclose(hwc(add_value(x[i:i + 1], c).clamp(0, 1)[0] * 255), expected_b, atol=1e-9)
            np.testing.assert_allclose(hwc(set_saturation(x[i:i + 1], a, b).clamp(0, 1)[0] * 255), expected_s, atol=1e-9)
            assert_close_u8(hwc(out_b[i]), ref.to_uint8(expected_b), max_fraction=0.08)
            assert_close_u8(hwc(out_s[i]), ref.to_uint8(expected_s), max_fraction=0.08)


@pytest.mark.parametrize("constants", ["cifar", "imagenet"])
def test_saturate_table_equals_the_formula(constants):
    """The (max, min, level) table gives the per-pixel float64 formula's bytes, grey pixels
    (every channel equal) and saturated ones included."""
    from cema_cli.corruptions.digital import saturate_by_table

    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    images[0, :, :8] = torch.arange(256, dtype=torch.uint8).reshape(1, 8, 32).repeat(3, 1, 2)  # greys
    images[1, 0, :4], images[1, 1:, :4] = 255, 0
    for severity in range(1, 6):
        a, b = K.SATURATE[constants][severity - 1]
        expected = (set_saturation(images.double() / 255.0, a, b).clamp(0, 1) * 255.0).to(torch.uint8)
        assert torch.equal(saturate_by_table(images, a, b), expected)


def test_brightness_raises_max_channel_and_saturate_tints_white():
    img = torch.tensor([100, 50, 20], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 8, 8).contiguous()
    out = run(img, "brightness", 1, "imagenet")[0, :, 0, 0].tolist()  # V 100/255 + 0.1
    v = 100 / 255 + 0.1
    assert out == [int(v * 255), int(v * 255 * 50 / 100), int(v * 255 * 20 / 100)] or max(
        abs(a - b) for a, b in zip(out, [v * 255, v * 127.5, v * 51])
    ) <= 1
    white = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    tinted = run(white, "saturate", 4, "imagenet")[0, :, 0, 0].tolist()
    assert tinted == [255, int(0.9 * 255), int(0.9 * 255)]


@pytest.mark.parametrize("constants", ["cifar", "imagenet"])
def test_contrast_formula(constants):
    images = batch(32, 2)
    for severity in range(1, 6):
        out = run(images, "contrast", severity, constants)
        for i in range(2):
            expected = ref.to_uint8(ref.contrast(hwc(images[i]), K.CONTRAST[constants][severity - 1]))
            assert_close_u8(hwc(out[i]), expected)
    # No clipping at these values: per-channel means are kept (up to truncation).
    mean_in = images.double().mean(dim=(2, 3))
    mean_out = run(images, "contrast", 5, constants).double().mean(dim=(2, 3))
    assert (mean_in - mean_out).abs().max() < 1.0


@pytest.mark.parametrize("constants,side,severity", [("cifar", 32, 1), ("cifar", 32, 5), ("imagenet", 224, 2), ("imagenet", 224, 5)])
def test_elastic_matches_opencv_scipy_reference(constants, side, severity):
    pytest.importorskip("cv2")
    images = batch(side, 1)
    out = run(images, "elastic_transform", severity, constants)
    alpha, sigma, a = K.ELASTIC[constants][severity - 1]
    g = gens_for("elastic_transform", severity, 1)[0]
    jitter = (-a + 2 * a * torch.rand((3, 2), generator=g, dtype=torch.float64)).float().numpy()
    fields = (-1 + 2 * torch.rand((2, side, side), generator=g, dtype=torch.float64)).numpy()
    expected = ref.to_uint8(ref.elastic_transform(hwc(images[0]), (alpha, sigma, a), jitter, fields[0], fields[1]))
    # OpenCV rounds warp positions to 1/32 px in some builds: allow a few levels at sharp edges.
    assert_close_u8(hwc(out[0]), expected, max_diff=6, max_fraction=0.05)
    assert np.abs(hwc(out[0]).astype(int) - expected.astype(int)).mean() < 0.2


def test_opencv_elastic_path_samples_at_exact_positions():
    """elastic_transform's OpenCV path is taken only where warpAffine and remap interpolate at
    the exact position (OpenCV 5), not at 1/32 px as 4.x does (spec 4.13)."""
    import cv2

    ramp = np.tile(np.arange(16, dtype=np.float32), (16, 1))
    shift = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 0.0]])
    warped = cv2.warpAffine(ramp, shift, (16, 16), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    rows = np.tile(np.arange(16, dtype=np.float32)[:, None], (1, 16))
    remapped = cv2.remap(ramp, ramp + np.float32(0.3), rows, cv2.INTER_LINEAR)
    exact = abs(warped[8, 8] - 8.3) < 1e-5 and abs(remapped[8, 8] - 8.3) < 1e-5
    assert _opencv_samples_exactly() == exact


@pytest.mark.parametrize("constants,side", [("cifar", 32), ("imagenet", 224)])
def test_pixelate_and_jpeg_equal_pillow(constants, side):
    images = batch(side, 1)
    for severity in range(1, 6):
        out = run(images, "pixelate", severity, constants)
        assert np.array_equal(hwc(out[0]), ref.pixelate(hwc(images[0]), K.PIXELATE[constants][severity - 1]))
        out = run(images, "jpeg_compression", severity, constants)
        assert np.array_equal(hwc(out[0]), ref.jpeg_compression(hwc(images[0]), K.JPEG[constants][severity - 1]))


@pytest.mark.parametrize("height,width", [(32, 32), (40, 57), (33, 31)])
def test_batched_pixelate_equals_pillow_per_image(height, width):
    """The batch is resized in two Pillow calls (stacked images); each image must still get
    Pillow's per-image bytes, also at sizes where BOX up-sampling is not OpenCV's nearest-exact
    (57 -> 54 -> 57 copies sample 26 at column 28, nearest-exact would copy 27)."""
    rng = np.random.default_rng(height * width)
    arrays = rng.integers(0, 256, (4, height, width, 3), dtype=np.uint8)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    for constants in ("cifar", "imagenet"):
        for severity in range(1, 6):
            out = run(images, "pixelate", severity, constants)
            for array, image in zip(arrays, out):
                assert np.array_equal(hwc(image), ref.pixelate(array, K.PIXELATE[constants][severity - 1]))


def test_pixelate_block_structure():
    """ImageNet severity 5: 224 -> 56 -> 224 is exact 4 x 4 blocks of the 4 x 4 means."""
    images = batch(224, 1)
    out = run(images, "pixelate", 5, "imagenet")[0].double()
    blocks = out.reshape(3, 56, 4, 56, 4)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))
    means = images[0].double().reshape(3, 56, 4, 56, 4).mean(dim=(2, 4))
    assert (blocks[:, :, 0, :, 0] - means).abs().max() <= 1  # two rounded passes


def test_jpeg_roundtrip_q85_equals_pillow():
    images = batch(32, 2)
    out = jpeg_roundtrip(images, 85)
    for i in range(2):
        assert np.array_equal(hwc(out[i]), ref.jpeg_compression(hwc(images[i]), 85))


# ---------------------------------------------------------------------------- spatter


def test_spatter_opencv_steps():
    cv2 = pytest.importorskip("cv2")
    from cema_cli.corruptions.spatter import canny, chamfer_distance

    rng = np.random.default_rng(4)
    for _ in range(3):
        smooth = np.clip(ndimage_smooth(rng.normal(0.65, 0.3, (48, 48)), 1.5), 0, 1)
        smooth[smooth < 0.68] = 0
        u8 = (smooth * 255).astype(np.uint8)
        t = torch.from_numpy(u8)[None, None]
        edges = canny(t)[0, 0].numpy()
        assert np.array_equal(edges, cv2.Canny(u8, 50, 150) > 0)
        dist = chamfer_distance(torch.from_numpy(edges)[None, None])[0, 0].numpy()
        expected = np.minimum(cv2.distanceTransform((255 - 255 * edges).astype(np.uint8), cv2.DIST_L2, 5), 20)
        # cema follows OpenCV 3.x/4.x 16.16 fixed-point costs; OpenCV 5 sums float costs.
        np.testing.assert_allclose(dist, expected, atol=1e-4)


def chamfer_by_relaxation(edges: np.ndarray, cap: float = 20.0) -> np.ndarray:
    """Shortest paths over OpenCV's 5x5 chamfer moves (16.16 fixed point), by Bellman-Ford
    relaxation until nothing changes: the definition the two raster passes must reproduce."""
    costs = {1: 65536, 2: round(1.4 * 65536), 5: round(2.1969 * 65536)}
    capped = int(cap * 65536)
    h, w = edges.shape
    dist = np.where(edges, 0, capped).astype(np.int64)
    while True:
        padded = np.pad(dist, 2, constant_values=capped)
        best = dist.copy()
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                if dy * dy + dx * dx in costs:
                    shifted = padded[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]
                    best = np.minimum(best, shifted + costs[dy * dy + dx * dx])
        best = np.minimum(best, capped)
        if np.array_equal(best, dist):
            return np.minimum(dist.astype(np.float32) * np.float32(1 / 65536), cap)
        dist = best


def test_chamfer_raster_passes_equal_shortest_paths():
    from cema_cli.corruptions.spatter import chamfer_distance

    rng = np.random.default_rng(11)
    for density, shape in ((0.002, (40, 70)), (0.01, (64, 64)), (0.05, (33, 21)), (0.0, (12, 12))):
        edges = rng.random((3, *shape)) < density
        ours = chamfer_distance(torch.from_numpy(edges)[:, None])[:, 0].numpy()
        for one, got in zip(edges, ours):
            np.testing.assert_array_equal(got, chamfer_by_relaxation(one))


def ndimage_smooth(x, sigma):
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma, mode="nearest")


@pytest.mark.parametrize("constants,side,severity", [("cifar", 32, 1), ("cifar", 32, 3), ("cifar", 32, 5), ("imagenet", 224, 2), ("imagenet", 224, 4)])
def test_spatter_matches_opencv_reference(constants, side, severity):
    pytest.importorskip("cv2")
    images = batch(side, 2)
    out = run(images, "spatter", severity, constants)
    for i, g in enumerate(gens_for("spatter", severity, 2)):
        normal = torch.randn((1, side, side), generator=g, dtype=torch.float64)[0].numpy()
        expected = ref.to_uint8(ref.spatter(hwc(images[i]), K.SPATTER[constants][severity - 1], normal))
        assert_close_u8(hwc(out[i]), expected, max_diff=2, max_fraction=0.02)
