"""Counted GFLOPs reproduce torch.utils.flop_counter's published anchors on random-init models."""

from __future__ import annotations

import pytest

from cema_cli.models import ModelOptions, load_model
from cema_cli.models.flops import forward_gflops_per_sample


@pytest.mark.parametrize("name, gflops", [("resnet18", 3.63), ("resnet50", 8.18), ("resnet101", 15.60)])
def test_resnet_forward_gflops_at_224_px(name, gflops):
    model = load_model(f"torchvision:{name}", options=ModelOptions(random_init=True))
    assert forward_gflops_per_sample(model, (3, 224, 224)) == pytest.approx(gflops, abs=0.005)


def test_images_are_counted_at_their_native_size_unless_an_input_size_is_given():
    native = load_model("torchvision:resnet18", options=ModelOptions(random_init=True))
    at_224 = forward_gflops_per_sample(native, (3, 224, 224))
    assert forward_gflops_per_sample(native, (3, 32, 32)) == pytest.approx(at_224 * (32 / 224) ** 2, rel=0.05)  # not upscaled
    resized = load_model("torchvision:resnet18", options=ModelOptions(random_init=True, input_size=224))
    assert forward_gflops_per_sample(resized, (3, 32, 32)) == pytest.approx(at_224, rel=1e-6)


def test_timm_models_run_at_the_images_size_not_timms_test_size():
    """timm:resnet18's test size is 288 px (5.99 GFLOP); ImageNet-C's 224-px images stay 224 px."""
    model = load_model("timm:resnet18", options=ModelOptions(random_init=True))
    assert model.input_size is None
    assert forward_gflops_per_sample(model, (3, 224, 224)) == pytest.approx(3.63, abs=0.005)


def test_the_embedded_edge_is_cheaper_than_its_foundation():
    edge, cloud = load_model("mnist-edge"), load_model("mnist-foundation")
    edge_gflops, cloud_gflops = (forward_gflops_per_sample(m, (3, 32, 32)) for m in (edge, cloud))
    assert 0 < edge_gflops < cloud_gflops


def test_foundation_compute_is_reported_for_the_methods_that_use_it_whatever_the_order():
    from cema_cli.run.api import run_benchmark
    from cema_cli.config import RunConfig

    for methods in (("bn", "cema"), ("cema", "bn")):
        rows = {r["method"]: r for r in run_benchmark(RunConfig(methods=methods, samples=64, device="cpu"))}
        assert rows["bn"]["cloud_gflops_per_sample"] is None
        assert rows["cema"]["cloud_gflops_per_sample"] > rows["cema"]["edge_gflops_per_sample"] > 0
