"""Counted GFLOPs reproduce torch.utils.flop_counter's published anchors on random-init models."""

from __future__ import annotations

import pytest

from cema_cli.models import ModelOptions, load_model
from cema_cli.models.flops import forward_gflops_per_sample


@pytest.mark.parametrize("name, gflops", [("resnet18", 3.63), ("resnet50", 8.18), ("resnet101", 15.60)])
def test_resnet_forward_gflops_at_224_px(name, gflops):
    model = load_model(f"torchvision:{name}", options=ModelOptions(random_init=True))
    assert forward_gflops_per_sample(model, (3, 224, 224)) == pytest.approx(gflops, abs=0.005)


def test_a_32_px_image_is_resized_to_the_models_input_first():
    model = load_model("torchvision:resnet18", options=ModelOptions(random_init=True))
    small = forward_gflops_per_sample(model, (3, 32, 32))
    assert small == pytest.approx(forward_gflops_per_sample(model, (3, 224, 224)), rel=1e-6)


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
