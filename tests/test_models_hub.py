"""Models by name (shared/spec/data.md, "Models"): timm and torchvision names, weights from the
library caches or checkpoint files (never a silent random fall-back), each model's own
preprocessing, LayerNorm adaptation for ViTs, and AMP around each step."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from cema_cli.config import RunConfig
from cema_cli.run.engine import run_stream
from cema_cli.errors import CemaError
from cema_cli.models import ModelOptions, load_model, weights_label
from cema_cli.models.hub import parse_name
from cema_cli.models.norm import norm_affine_params

RANDOM = ModelOptions(random_init=True)


def test_names_pick_the_library():
    assert parse_name("timm:resnet18") == ("timm", "resnet18")
    assert parse_name("torchvision:resnet101") == ("torchvision", "resnet101")
    assert parse_name("mnist-edge") == ("embedded", "mnist-edge")
    assert parse_name("resnet50") == ("timm", "resnet50")
    with pytest.raises(CemaError, match="use timm:<name>, torchvision:<name>"):
        parse_name("hub:resnet18")


def test_unknown_model_names_suggest_close_matches():
    with pytest.raises(CemaError, match="unknown torchvision model 'resnet19'. Did you mean 'resnet18'"):
        load_model("torchvision:resnet19", options=RANDOM)
    with pytest.raises(CemaError, match="unknown timm model 'resnet10x'.*resnet10t"):
        load_model("timm:resnet10x", options=RANDOM)


def test_preprocessing_comes_from_each_models_own_config():
    vit = load_model("timm:test_vit", options=RANDOM)
    assert vit.input_size == (160, 160)
    assert torch.allclose(vit.mean.flatten(), torch.full((3,), 0.5 * 255))
    resnet = load_model("torchvision:resnet18", options=RANDOM)
    assert resnet.input_size == (224, 224)
    assert torch.allclose(resnet.std.flatten(), torch.tensor([0.229, 0.224, 0.225]) * 255)
    small = load_model("torchvision:resnet18", options=ModelOptions(random_init=True, input_size=32))
    assert small.input_size == (32, 32)


def test_images_are_resized_to_the_models_input_size():
    model = load_model("timm:resnet10t", options=ModelOptions(random_init=True, input_size=48, num_classes=7))
    seen = []
    model.net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    logits = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert seen == [(2, 3, 48, 48)] and logits.shape == (2, 7)


def test_vits_adapt_layernorm_affine_parameters():
    vit = load_model("timm:test_vit", options=RANDOM)
    layernorms = [m for m in vit.modules() if isinstance(m, torch.nn.LayerNorm)]
    params = norm_affine_params(vit)
    assert layernorms and len(params) == 2 * len(layernorms)


def test_missing_pretrained_weights_say_where_cema_looked(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CemaError, match=f"looked for {tmp_path}/torch/hub/checkpoints/resnet18-f37072fd.pth.*--random-init"):
        load_model("torchvision:resnet18")
    with pytest.raises(CemaError, match=f"the Hugging Face cache {tmp_path}/hf \\(repo timm/resnet10t.c3_in1k\\)"):
        load_model("resnet10t")


def test_pretrained_weights_are_read_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = load_model("torchvision:resnet18", options=RANDOM)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference.net.state_dict(), cached)
    model = load_model("torchvision:resnet18")
    assert torch.equal(model.net.conv1.weight, reference.net.conv1.weight)


def test_pretrained_timm_weights_are_read_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    reference = load_model("timm:resnet10t", options=RANDOM)
    repo = tmp_path / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(reference.net.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    model = load_model("timm:resnet10t")
    assert torch.equal(model.net.fc.weight, reference.net.fc.weight)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module."])
def test_checkpoints_load_with_weights_only_in_common_wrappings(tmp_path, wrap):
    reference = load_model("timm:resnet10t", options=ModelOptions(random_init=True, num_classes=10))
    state = reference.net.state_dict()
    saved = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3}, "model": {"model": state},
             "module.": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(saved, tmp_path / "edge.pt")
    model = load_model("timm:resnet10t", options=ModelOptions(checkpoint=str(tmp_path / "edge.pt"), num_classes=10))
    assert torch.equal(model.net.fc.weight, reference.net.fc.weight)
    assert weights_label("timm:resnet10t", ModelOptions(checkpoint="edge.pt")) == "checkpoint:edge.pt"


def test_checkpoint_with_mismatched_keys_names_them(cli, tmp_path):
    state = load_model("timm:resnet10t", options=ModelOptions(random_init=True, num_classes=10)).net.state_dict()
    state.pop("fc.bias")
    state["head.extra"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CemaError, match=r"missing keys \(1\): fc.bias; unexpected keys \(1\): head.extra"):
        load_model("timm:resnet10t", options=ModelOptions(checkpoint=str(tmp_path / "bad.pt"), num_classes=10))
    torch.save({"fc.weight": torch.zeros(5, 512)}, tmp_path / "shape.pt")
    with pytest.raises(CemaError, match=r"wrong shapes \(1\): fc.weight \(5, 512\) vs \(10, 512\)"):
        load_model("timm:resnet10t", options=ModelOptions(checkpoint=str(tmp_path / "shape.pt"), num_classes=10))
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "images.npy", np.zeros((6, 32, 32, 3), np.uint8))
    np.save(data / "labels.npy", np.arange(6) % 3)  # 3 classes: the 10-class head does not fit either
    result = cli("bench", "--method", "source", "--dataset", "npy", "--data-root", str(data), "--edge", "timm:resnet10t",
                 "--cloud", "timm:resnet10t", "--edge-checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "run"))
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "missing keys (1): fc.bias; unexpected keys (1): head.extra; wrong shapes (1): fc.weight (10, 512) vs (3, 512)" in text


def test_a_pickled_object_is_refused_by_weights_only(tmp_path):
    import argparse

    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickle.pt")
    with pytest.raises(CemaError, match=r"cannot read checkpoint .* with torch.load\(weights_only=True\) \(UnpicklingError\)"):
        load_model("timm:resnet10t", options=ModelOptions(checkpoint=str(tmp_path / "pickle.pt")))


def test_a_model_with_other_classes_is_refused():
    model = load_model("mnist-edge", options=RANDOM)
    assert model.net.fc.out_features == 10
    with pytest.raises(CemaError, match="outputs 10 classes but the dataset needs 1000"):
        load_model("mnist-edge", options=ModelOptions(random_init=True, num_classes=1000))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amp": "bf16", "device": "cpu"}, "--amp runs on CUDA only"),
        ({"amp": "fp8"}, "unknown --amp dtype 'fp8'"),
        ({"random_init": True, "edge_checkpoint": __file__}, "contradict"),
        ({"edge_checkpoint": "/nonexistent.pt"}, "--edge-checkpoint /nonexistent.pt: no such file"),
        ({"workers": -1}, "--workers -1"),
    ],
)
def test_real_run_options_are_validated(overrides, message):
    with pytest.raises(CemaError, match=message):
        RunConfig(methods=("source",), **overrides).validate()


def test_amp_is_refused_when_auto_resolves_to_cpu():
    from cema_cli.run.api import autocast_for

    with pytest.raises(CemaError, match="this run is on cpu"):
        autocast_for("bf16", torch.device("cpu"))
    assert autocast_for(None, torch.device("cpu")) is None


def test_the_engine_runs_every_step_inside_the_autocast_context():
    entered = []

    @contextlib.contextmanager
    def autocast():
        entered.append(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    dtypes = []

    class Step:
        def step(self, images):
            out = torch.nn.functional.linear(images.float().flatten(1), torch.ones(3, 12))
            dtypes.append(out.dtype)
            return out

    class Ticks:
        def tick(self):
            pass

    batches = [(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))] * 3
    tally = run_stream(Step(), batches, Ticks(), torch.device("cpu"), autocast=autocast)
    assert len(entered) == 3 and dtypes == [torch.bfloat16] * 3 and tally.seen == 6


def test_channels_last_models_and_inputs():
    model = load_model("torchvision:resnet18", options=ModelOptions(random_init=True, input_size=32, channels_last=True))
    assert model.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert seen == [True]
