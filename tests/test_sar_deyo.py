"""SAR and DeYO (shared/spec/methods-more.md sections 6-8): the contracts every strategy keeps,
hand-checked formulas (SAM's two steps, the recovery rule, the PLPD filter and weights, the
patch shuffle), cloud placement against the original, the parameter subsets and their downlink
on torchvision/timm networks, declared placements, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cema_cli.link.channel import Channel
from cema_cli.config import ChannelConfig
from cema_cli.run.engine import run_stream
from cema_cli.errors import CemaError
from cema_cli.models.nets import Classifier
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import StrategyContext, make_config
from cema_cli.strategies.deyo import DeYOConfig, deyo_weights, kept_by_plpd, patch_shuffle, plpd
from cema_cli.strategies.randomness import batch_generator
from cema_cli.strategies.sar import SAM, SAR_SUBSET, Recovery
from cema_cli.strategies.subsets import values_in
from strategy_helpers import noisy_batches, source_model, strategy
from test_datasets_real import class_tree

SPECS = ["sar", "sar@edge", "deyo", "deyo@edge"]


def build(spec: str, channel_config: ChannelConfig | None = None, **options):
    method, _, placement = spec.partition("@")
    return strategy(method, channel_config, **({"placement": placement} if placement else {}), **options)


def run_logits(spec: str, batches, channel_config: ChannelConfig | None = None, **options) -> list[torch.Tensor]:
    s = build(spec, channel_config, **options)
    out = []
    for batch in batches:
        out.append(s.step(batch))
        s.context.channel.tick()
    return out


# --- contracts --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_scored_logits_come_from_the_parameters_before_the_update(spec):
    s = build(spec)
    (batch,) = noisy_batches(1, size=256)
    before = s.predict(batch)
    assert torch.equal(s.step(batch), before)
    assert not torch.allclose(s.predict(batch), before, atol=1e-7)  # the edge now reads the update


@pytest.mark.parametrize("spec", ["sar", "deyo@edge"])
def test_predictions_do_not_depend_on_the_labels(spec):
    batches = noisy_batches(3)
    outputs = []
    for labels in (torch.zeros(64, dtype=torch.long), torch.arange(64) % 10):
        s, seen = build(spec), []
        step = s.step
        s.step = lambda images: seen.append(step(images)) or seen[-1]
        run_stream(s, [(b, labels) for b in batches], s.context.channel, torch.device("cpu"))
        outputs.append(seen)
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


@pytest.mark.parametrize("spec", ["sar", "deyo"])
def test_same_seed_same_numbers_and_a_budget_that_never_binds_changes_nothing(spec):
    batches = noisy_batches(4)
    free = run_logits(spec, batches)
    again = run_logits(spec, batches)
    ample = run_logits(spec, batches, ChannelConfig(uplink_budget_bytes=10**9, downlink_budget_bytes=10**9))
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(free, again, ample))


@pytest.mark.parametrize("method", ["sar", "deyo"])
def test_cloud_with_upload_all_predicts_exactly_as_the_original_on_the_edge(method):
    """Section 7.5 and 8.5: with BN the default upload filter is not exact; upload=all is."""
    batches = noisy_batches(4)
    cloud = run_logits(method, batches, upload="all")
    edge = run_logits(f"{method}@edge", batches)
    assert all(torch.equal(a, b) for a, b in zip(cloud, edge))


def test_cloud_uploads_the_selected_samples_and_deyo_adds_its_plpd():
    sar, deyo = build("sar"), build("deyo")
    for batch in noisy_batches(2):
        for s in (sar, deyo):
            s.step(batch)
            s.channel.tick()
    for s, extra in ((sar, 0), (deyo, 4)):
        stats = s.channel.uplink.stats
        assert 0 < stats.sent < 128  # a filtered selection, not every sample
        assert stats.transmitted_bytes == stats.sent * (3 * 32 * 32 + extra)
        assert s.work.edge_backward == 0 and s.work.cloud_backward > 0  # the edge only forwards


def test_work_counts_follow_the_passes_of_section_7_2():
    s = build("sar@edge")
    s.step(noisy_batches(1)[0])
    assert s.work.edge_forward == 2 * 64  # the forward and SAM's forward at the perturbed weights
    assert 0 < s.work.edge_backward <= 2 * 64


# --- SAR formulas -----------------------------------------------------------------------------

def test_sam_two_steps_by_hand():
    """L = |w|^2 / 2, so g = w. w = (3, 4), rho 0.5: eps = 0.5 (3, 4)/5 = (0.3, 0.4); the gradient
    at w + eps is (3.3, 4.4); SGD lr 0.1 from w: (3 - 0.33, 4 - 0.44)."""
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    sam = SAM([w], torch.optim.SGD([w], lr=0.1, momentum=0.9), rho=0.5)
    (w.pow(2).sum() / 2).backward()
    sam.ascend()
    assert w.detach().tolist() == pytest.approx([3.3, 4.4]) and w.grad is None
    (w.pow(2).sum() / 2).backward()
    sam.descend()
    assert w.detach().tolist() == pytest.approx([2.67, 3.56])


def test_recovery_average_and_reset_rule():
    rule = Recovery(threshold=0.2, factor=0.9, keep_after_reset=False)
    rule.update(float("nan"))  # empty S2: e_m stays undefined
    assert rule.average is None and not rule.reset_due()
    rule.update(0.5)
    rule.update(0.1)
    assert rule.average == pytest.approx(0.9 * 0.5 + 0.1 * 0.1)
    rule.update(float("nan"))
    assert rule.average == pytest.approx(0.46) and not rule.reset_due()
    rule.update(0.15)
    rule.update(-2.0)  # 0.9 * 0.429 + 0.1 * -2 = 0.1861 < 0.2
    assert rule.reset_due() and rule.average is None  # cleared: the authors' intent (trap 2)
    official = Recovery(threshold=0.2, factor=0.9, keep_after_reset=True)
    official.update(0.1)
    assert official.reset_due() and official.reset_due()  # e_m kept: resets again next batch


def test_a_reset_restores_the_source_subset_and_the_cloud_sends_it_down():
    s = build("sar", upload="all", reset_threshold=100.0)  # e_m < 100 always: reset after every step
    source = {k: v.clone() for k, v in s.downlink_state().items()}
    s.step(noisy_batches(1)[0])
    assert s.learner.resets == 1 and s.learner.recovery.average is None
    assert not s.learner.sam.base.state  # the optimiser state is the construction snapshot's
    edge = dict(s.edge.net.named_parameters())
    assert all(torch.equal(edge[k], v) for k, v in source.items())
    official = build("sar", upload="all", reset_threshold=100.0, keep_momentum_after_reset=True)
    official.step(noisy_batches(1)[0])
    assert official.learner.resets == 1 and len(official.learner.sam.base.state) == len(source)  # buffers kept


def test_an_empty_reliable_set_still_moves_the_parameters_by_momentum():
    """Section 7.2: with S1 empty the gradients are zero, eps is 0, and SGD applies
    p <- p - lr * 0.9 * buffer (trap 7)."""
    s = build("sar@edge")
    batch = noisy_batches(1)[0]
    s.step(batch)
    params = list(s.learner.params.values())
    before = [p.detach().clone() for p in params]
    buffers = [s.learner.sam.base.state[p]["momentum_buffer"].clone() for p in params]
    s.learner.e0 = -1.0  # no entropy is below it
    s.step(batch)
    lr = s.config.lr
    assert all(torch.allclose(p, b - lr * 0.9 * m, atol=1e-7) for p, b, m in zip(params, before, buffers))
    assert any(not torch.equal(p, b) for p, b in zip(params, before))


# --- DeYO formulas ----------------------------------------------------------------------------

def test_plpd_filter_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    shuffled = torch.tensor([[0.4, 0.5, 0.1], [0.3, 0.2, 0.5]])
    assert plpd(probs, shuffled).tolist() == pytest.approx([0.3, 0.4])
    drop = torch.tensor([float("nan"), 0.3, 0.31, -0.2])  # NaN: outside S1
    assert kept_by_plpd(drop, DeYOConfig(plpd_threshold=0.3)).tolist() == [False, False, True, False]  # strict
    assert kept_by_plpd(drop, DeYOConfig(filter_plpd=False)).tolist() == [False, True, True, True]


def test_deyo_weights_by_hand():
    ent, drop = torch.tensor([1.0, 2.0]), torch.tensor([0.2, 0.5])
    both = deyo_weights(ent, drop, 1.5, True, True)
    assert both.tolist() == pytest.approx([math.exp(0.5) + math.exp(0.2), math.exp(-0.5) + math.exp(0.5)])
    assert deyo_weights(ent, drop, 1.5, True, False).tolist() == pytest.approx([math.exp(0.5), math.exp(-0.5)])
    assert deyo_weights(ent, drop, 1.5, False, True).tolist() == pytest.approx([math.exp(0.2), math.exp(0.5)])
    assert deyo_weights(ent, drop, 1.5, False, False).tolist() == [1.0, 1.0]


def test_patch_shuffle_permutes_each_images_patches_with_its_own_seeded_draw():
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = patch_shuffle(images, 2, batch_generator(7, 3))
    order = torch.argsort(torch.rand(2, 4, generator=batch_generator(7, 3)), dim=-1)
    for n in range(2):
        patches = [images[n, 0, r : r + 2, c : c + 2] for r in (0, 2) for c in (0, 2)]
        got = [out[n, 0, r : r + 2, c : c + 2] for r in (0, 2) for c in (0, 2)]
        assert all(torch.equal(got[k], patches[order[n, k]]) for k in range(4))
    assert torch.equal(out, patch_shuffle(images, 2, batch_generator(7, 3)))
    assert not torch.equal(out, patch_shuffle(images, 2, batch_generator(7, 4)))  # another batch, another draw
    assert patch_shuffle(torch.rand(1, 3, 5, 5), 2, batch_generator(0, 0)).shape == (1, 3, 5, 5)  # resized back


# --- subsets on real architectures ------------------------------------------------------------

@pytest.mark.parametrize(("arch", "values", "layers"), [("resnet18", 4480, 15), ("resnet50", 30592, 43)])
def test_sar_subset_on_torchvision_resnets_matches_the_spec(arch, values, layers):
    from torchvision import models

    chosen = SAR_SUBSET.select(Classifier(models.get_model(arch, weights=None), (0.5,) * 3, (0.5,) * 3))
    assert values_in(chosen) == values
    assert len({name.rpartition(".")[0] for name in chosen}) == layers
    assert "bn1.weight" in chosen and not any("layer4" in name for name in chosen)  # bare names


def test_sar_subset_on_a_timm_vit_leaves_out_blocks_9_to_11_and_the_final_norm():
    from cema_cli.models import import_timm

    chosen = SAR_SUBSET.select(import_timm().create_model("vit_tiny_patch16_224", pretrained=False))
    assert values_in(chosen) == 9 * 2 * 2 * 192  # blocks.0-8 norm1/norm2
    assert "norm.weight" not in chosen and "blocks.8.norm2.bias" in chosen and "blocks.9.norm1.weight" not in chosen


def hub_context(arch: str) -> StrategyContext:
    from torchvision import models

    model = Classifier(models.get_model(arch, weights=None), (0.5,) * 3, (0.5,) * 3).eval()
    return StrategyContext(edge_model=model, cloud_model=lambda: model, channel=Channel(ChannelConfig()), num_classes=1000,
                           device=torch.device("cpu"), clean_samples=lambda n: torch.empty(0), seed=0)


@pytest.mark.parametrize(("arch", "values"), [("resnet18", 4480), ("resnet50", 30592)])
def test_the_downlink_carries_exactly_the_sar_subset(arch, values):
    factory = STRATEGIES.get("sar")
    s = factory(hub_context(arch), make_config(factory, {"upload": "all"}, "sar", "imagenet"))
    s.step(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert s.trained_values == values
    assert s.channel.downlink.stats.transmitted_bytes == 4 * values  # float32, one sync


# --- placements and bad input -----------------------------------------------------------------

def test_list_methods_shows_placements_and_backward_freeness(cli):
    lines = {line.split()[0]: " ".join(line.split()) for line in cli("list", "methods").output.splitlines() if line.strip()}
    assert "(cloud/edge, default cloud; backward passes)" in lines["sar"]
    assert "(cloud/edge, default cloud; backward passes)" in lines["deyo"]
    assert "(edge only; backward-free)" in lines["bn"]
    assert "(cloud only; backward passes)" in lines["cema"]


def test_placement_checks_live_in_make_config():
    with pytest.raises(CemaError, match="method 'bn' cannot take placement 'cloud'; it runs on the edge only"):
        make_config(STRATEGIES.get("bn"), {"placement": "cloud"}, "bn")
    assert make_config(STRATEGIES.get("bn"), {"placement": "edge"}, "bn") is not None  # its one placement
    assert make_config(STRATEGIES.get("deyo"), {"placement": "edge"}, "deyo").placement == "edge"


def test_presets_take_the_spec_constants_tables():
    sar, deyo = STRATEGIES.get("sar"), STRATEGIES.get("deyo")
    assert make_config(sar, {}, "sar", "cifar10").lr == 1e-3 and make_config(sar, {}, "sar", "imagenet").lr == 0.00025
    cifar = make_config(deyo, {}, "deyo", "cifar10")
    assert (cifar.optimizer, cifar.lr, cifar.plpd_threshold) == ("adam", 1e-3, 0.2)
    assert make_config(deyo, {}, "deyo", "imagenet").plpd_threshold == 0.3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "bn", "-o", "bn.placement=cloud"], "method 'bn' cannot take placement 'cloud'; it runs on the edge only"),
        (["-m", "cema", "-o", "cema.placement=edge"], "method 'cema' cannot take placement 'edge'; it runs with placement cloud"),
        (["-m", "sar", "-o", "sar.placement=fog"], "cannot take placement 'fog'"),
        (["-m", "sar", "-o", "sar.warp=9"], "method 'sar' has no option warp"),
        (["-m", "sar", "-o", "sar.rho=big"], "option sar.rho='big' is not a float"),
        (["-m", "deyo", "-o", "deyo.aug_type=blur"], "option deyo.aug_type='blur' is invalid: it must be one of patch, pixel, occ"),
        (["-m", "deyo", "-o", "deyo.upload=reliable"], "it must be filtered or all"),
    ],
)
def test_bad_method_options_are_one_line_and_exit_2(cli, tmp_path, args, expected):
    result = cli("bench", "--samples", "64", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_model_without_the_selected_layers_names_the_rule(cli, tmp_path):
    root = class_tree(tmp_path / "f")
    result = cli("bench", "-m", "sar", "--dataset", "folder", "--data-root", str(root), "--edge", "torchvision:squeezenet1_1",
                 "--cloud", "torchvision:squeezenet1_1", "--random-init", "--input-size", "32", "--workers", "0",
                 "--device", "cpu", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "rule 'SAR norm affine' (weight and bias of BatchNorm2d, LayerNorm, GroupNorm except names that contains 'layer4'" in " ".join(result.output.split())
    assert "matched no parameter of model SqueezeNet" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_the_row_records_the_trained_values_and_the_preset(cli, tmp_path):
    import pandas as pd

    result = cli("compare", "--methods", "sar,deyo,bn", "--samples", "128", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "results.csv").set_index("method")
    bns = [m for m in source_model("mnist-edge").modules() if isinstance(m, nn.BatchNorm2d)]
    norm_values = sum(m.weight.numel() + m.bias.numel() for m in bns)
    assert frame.loc["sar", "trained_values"] == frame.loc["deyo", "trained_values"] == norm_values  # no layer4 here
    assert pd.isna(frame.loc["bn", "trained_values"])
    assert set(frame["preset"]) == {"cifar10"}
    assert '"lr": 0.001' in frame.loc["sar", "method_config"] and '"optimizer": "adam"' in frame.loc["deyo", "method_config"]


def test_random_init_weights_follow_the_run_seed(tmp_path):
    """Comparisons across runs on --random-init models need the same weights for the same seed."""
    from cema_cli.run.api import Events, open_session
    from cema_cli.config import RunConfig

    config = RunConfig(methods=("bn",), dataset="folder", data_root=str(class_tree(tmp_path / "f")), edge="torchvision:resnet18",
                       cloud="torchvision:resnet18", random_init=True, input_size=32, workers=0, device="cpu")
    first, second = (open_session(config, Events()) for _ in range(2))
    torch.manual_seed(123)  # whatever the global state, the cloud model follows the seed too
    pairs = [(first.edge_source, second.edge_source), (first.cloud_model(), second.cloud_model())]
    assert all(torch.equal(a, b) for x, y in pairs for a, b in zip(x.state_dict().values(), y.state_dict().values()))


# --- the official learning-rate rule (section 7.3) -------------------------------------------

@pytest.mark.parametrize("batch, transformer, lr", [
    (64, False, 0.00025), (32, False, 0.00025), (16, False, 2 * 0.00025 * 16 / 64),
    (1, False, 1.5625e-5), (64, True, 0.001), (8, True, 0.001 * 8 / 64), (1, True, 3.125e-5),
])
def test_the_official_lr_follows_batch_and_model(batch, transformer, lr):
    from cema_cli.strategies.sar import official_lr

    assert official_lr(batch, transformer) == pytest.approx(lr, rel=1e-12)


def test_only_layernorm_networks_take_the_transformer_rule():
    from cema_cli.run.api import is_transformer

    assert is_transformer(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    assert not is_transformer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LayerNorm(4)))
    assert not is_transformer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)))


def test_rows_record_the_lr_the_rule_chose_and_an_explicit_lr_wins(cli, tmp_path):
    import json

    import pandas as pd

    args = ("compare", "--samples", "64", "--batch-size", "16", "--preset", "imagenet", "--corruption", "gaussian_noise")
    result = cli(*args, "--methods", "sar,deyo", "--out", str(tmp_path / "rule"))
    assert result.exit_code == 0, result.output
    configs = {m: json.loads(c) for m, c in pd.read_csv(tmp_path / "rule" / "results.csv")[["method", "method_config"]].values}
    assert configs["sar"]["lr"] == configs["deyo"]["lr"] == pytest.approx(2 * 0.00025 * 16 / 64)
    assert configs["sar"]["lr_rule"] == "official"
    result = cli(*args, "--methods", "sar", "-o", "sar.lr=0.003", "--out", str(tmp_path / "fixed"))
    assert result.exit_code == 0, result.output
    config = json.loads(pd.read_csv(tmp_path / "fixed" / "results.csv")["method_config"][0])
    assert (config["lr"], config["lr_rule"]) == (0.003, "fixed")
