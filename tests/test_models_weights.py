"""Weight versions, provenance and RobustBench models (issue 21, items 1-4): names with weights
tags, files found where the libraries keep them under their registries' names, sha256 of every
file, RobustBench's files loaded key for key, and the input size each model is fed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from cema_cli.errors import CemaError
from cema_cli.models import ModelOptions, load_model, weights_source
from cema_cli.models.hub import WeightsWarning
from cema_cli.models.robustbench import ZOO
from weights_helpers import random_bn_statistics, robustbench_file, timm_file, torchvision_file

RANDOM = ModelOptions(random_init=True)
GOLDEN = Path(__file__).parent / "golden" / "robustbench_state_keys.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty TORCH_HOME, HF_HOME and RobustBench model_dir for this test."""
    for variable, folder in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("CEMA_ROBUSTBENCH_DIR", "rb")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def test_a_v1_file_under_torchvisions_name_loads_for_the_v1_tag(homes):
    path = torchvision_file(homes / "torch", "resnet50", "IMAGENET1K_V1")
    assert path.name == "resnet50-0676ba61.pth"  # the name in torchvision's ResNet50_Weights.IMAGENET1K_V1 url
    with pytest.warns(WeightsWarning, match="not 0676ba61"):  # random weights: not the published file's hash
        model = load_model("torchvision:resnet50@IMAGENET1K_V1")
    assert torch.equal(model.net.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])
    source = weights_source("torchvision:resnet50@IMAGENET1K_V1", ModelOptions())
    assert (source.label, source.sha256()) == ("pretrained:IMAGENET1K_V1", sha256(path))


def test_the_default_tag_names_the_v2_file_and_points_at_the_v1_file_present(homes):
    torchvision_file(homes / "torch", "resnet50", "IMAGENET1K_V1")
    with pytest.raises(CemaError) as error:
        load_model("torchvision:resnet50")
    message = str(error.value)
    assert "resnet50-11ad3fa6.pth, the file of ResNet50_Weights.IMAGENET1K_V2" in message
    assert "found resnet50-0676ba61.pth: name it torchvision:resnet50@IMAGENET1K_V1" in message


def test_an_unknown_weights_tag_lists_the_enums_members():
    with pytest.raises(CemaError, match="torchvision:resnet50 has no weights 'V1'; torchvision's ResNet50_Weights has IMAGENET1K_V1, IMAGENET1K_V2"):
        load_model("torchvision:resnet50@V1", options=RANDOM)
    with pytest.raises(CemaError, match="timm:resnet18 has no pretrained tag 'zz'; its tags: a1_in1k, a2_in1k"):
        load_model("timm:resnet18.zz", options=RANDOM)


def test_timm_tags_pick_the_pretrained_config_and_its_file(homes):
    path = timm_file(homes / "hf", "resnet10t.c3_in1k")
    model = load_model("timm:resnet10t@c3_in1k")
    assert torch.equal(model.net.fc.weight, load_model("timm:resnet10t.c3_in1k").net.fc.weight)
    source = weights_source("timm:resnet10t", ModelOptions())  # no tag: timm's default, resolved and recorded
    assert (source.label, source.file, source.sha256()) == ("pretrained:c3_in1k", path, sha256(path))


def test_missing_weights_say_where_cema_looked_in_one_line(homes):
    for name, where in (("timm:resnet18.a1_in1k", f"the Hugging Face cache {homes / 'hf' / 'hub'} (repo timm/resnet18.a1_in1k)"),
                        ("robustbench:cifar10/corruptions/Standard", f"looked for {homes / 'rb' / 'cifar10/corruptions/Standard.pt'}")):
        with pytest.raises(CemaError) as error:
            load_model(name)
        assert where in str(error.value) and "\n" not in str(error.value)
    assert "CEMA_ROBUSTBENCH_DIR" in str(error.value) and "--random-init" in str(error.value)


def test_a_checkpoints_sha256_is_its_files():
    path = Path(__file__)
    source = weights_source("timm:resnet10t", ModelOptions(checkpoint=str(path)))
    assert (source.label, source.sha256()) == (f"checkpoint:{path}", sha256(path))
    assert weights_source("timm:resnet10t", RANDOM).sha256() == ""


def test_fixed_size_models_are_resized_and_others_see_the_native_size():
    assert load_model("timm:test_vit", options=RANDOM).input_size == (160, 160)  # a ViT's patch grid is fixed
    assert load_model("torchvision:vit_b_16", options=RANDOM).input_size == (224, 224)
    assert load_model("timm:resnet18.a1_in1k", options=RANDOM).input_size is None  # not timm's 288-px test size


# --- RobustBench ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in ZOO if ZOO[n].build is not None])
def test_robustbench_architectures_have_robustbenchs_keys_and_shapes(name):
    """Key for key (in order) with RobustBench 1.1.1's own classes (tests/golden, from its wheel)."""
    expected = json.loads(GOLDEN.read_text())["models"][name]
    ours = [[k, list(v.shape)] for k, v in ZOO[name].build().state_dict().items()]
    assert ours == expected


def wrn_by_hand(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The pre-activation WRN of Zagoruyko and Komodakis, written out with functional ops: the
    shortcut of a block that changes width takes the activated input, the others the raw one;
    BN-ReLU, 8x8 average pooling and the linear head at the end."""
    def bn(prefix: str, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(t, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"], state[f"{prefix}.weight"],
                            state[f"{prefix}.bias"], training=False, eps=1e-5)

    out = F.conv2d(x, state["conv1.weight"], padding=1)
    for stage, stride in (("block1", 1), ("block2", 2), ("block3", 2)):
        i = 0
        while f"{stage}.layer.{i}.conv1.weight" in state:
            p, s = f"{stage}.layer.{i}", stride if i == 0 else 1
            activated = F.relu(bn(f"{p}.bn1", out))
            h = F.conv2d(activated, state[f"{p}.conv1.weight"], stride=s, padding=1)
            h = F.conv2d(F.relu(bn(f"{p}.bn2", h)), state[f"{p}.conv2.weight"], padding=1)
            shortcut = F.conv2d(activated, state[f"{p}.convShortcut.weight"], stride=s) if f"{p}.convShortcut.weight" in state else out
            out, i = h + shortcut, i + 1
    pooled = F.avg_pool2d(F.relu(bn("bn1", out)), 8).flatten(1)
    return F.linear(pooled, state["fc.weight"], state["fc.bias"])


def test_a_robustbench_wrn_28_10_file_loads_key_for_key_and_computes_the_hand_built_net(homes):
    path, state = robustbench_file(homes / "rb", "cifar10/corruptions/Standard")  # {"state_dict": {"module.*": ...}}
    model = load_model("robustbench:cifar10/corruptions/Standard")
    assert list(model.net.state_dict()) == list(state) and all(torch.equal(model.net.state_dict()[k], v) for k, v in state.items())
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        expected = wrn_by_hand(state, images.float() / 255)  # Standard takes [0, 1] images, no normalisation
        assert torch.allclose(model(images), expected, atol=1e-4, rtol=1e-4)
    assert model.input_size is None  # 32 px, as the files were trained
    assert weights_source("robustbench:cifar10/corruptions/Standard", ModelOptions()).sha256() == sha256(path)


def test_augmix_models_normalise_with_half_and_accept_robustbenchs_buffers(homes):
    name = "cifar10/corruptions/Hendrycks2020AugMix_WRN"
    path, state = robustbench_file(homes / "rb", name, wrap="plain")
    model = load_model(f"robustbench:{name}")
    images = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(images), wrn_by_hand(state, torch.ones(1, 3, 32, 32)), atol=1e-4)  # (1 - 0.5) / 0.5 = 1
    torch.save({**state, "mu": torch.full((1, 3, 1, 1), 0.5), "sigma": torch.full((1, 3, 1, 1), 0.5)}, path)
    load_model(f"robustbench:{name}")  # saved from RobustBench's module after loading: same normalisation, dropped
    torch.save({**state, "mu": torch.zeros(1, 3, 1, 1), "sigma": torch.ones(1, 3, 1, 1)}, path)
    with pytest.raises(CemaError, match=r"unexpected keys \(2\): mu, sigma"):
        load_model(f"robustbench:{name}")


def test_batchnorm_counters_may_be_absent_from_old_files(homes):
    name = "cifar100/corruptions/Hendrycks2020AugMix_ResNeXt"
    path, state = robustbench_file(homes / "rb", name, wrap="plain")
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_model(f"robustbench:{name}")
    assert torch.equal(model.net.classifier.weight, state["classifier.weight"]) and model.net.num_classes == 100


def test_standard_r50_is_torchvisions_v1_resnet50(homes):
    path = torchvision_file(homes / "torch", "resnet50", "IMAGENET1K_V1", seed=3)
    with pytest.warns(WeightsWarning):
        model = load_model("robustbench:imagenet/corruptions/Standard_R50")
    assert torch.equal(model.net.fc.weight, torch.load(path, weights_only=True)["fc.weight"])
    assert torch.allclose(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]) * 255)
    assert weights_source("robustbench:imagenet/corruptions/Standard_R50", ModelOptions()).label == "pretrained:IMAGENET1K_V1"


def test_random_init_robustbench_models_need_no_file_and_keep_their_class_count():
    assert load_model("robustbench:cifar100/corruptions/Hendrycks2020AugMix_ResNeXt", options=RANDOM)(
        torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 100)
    with pytest.raises(CemaError, match="unknown RobustBench model 'cifar10/corruptions/Standrd'. Did you mean 'cifar10/corruptions/Standard'.*Valid"):
        load_model("robustbench:cifar10/corruptions/Standrd", options=RANDOM)


def test_random_bn_statistics_helper_changes_what_it_should():
    state = {"bn.running_var": torch.ones(3), "bn.weight": torch.ones(3), "conv.weight": torch.ones(3, 3, 1, 1)}
    out = random_bn_statistics(state)
    assert not torch.equal(out["bn.running_var"], state["bn.running_var"]) and torch.equal(out["conv.weight"], state["conv.weight"])
