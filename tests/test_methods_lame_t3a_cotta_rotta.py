"""LAME, T3A, CoTTA and RoTTA (shared/spec/methods-more.md sections 6.1, 9-12): the contracts every
strategy keeps, formulas on tiny cases worked by hand, placements, and downlink sizes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cema_cli.link.channel import Channel
from cema_cli.config import ChannelConfig
from cema_cli.errors import CemaError
from cema_cli.models import ModelOptions, load_model
from cema_cli.models.nets import Classifier
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.augment import DEFAULT, JITTER_OPS, AugmentParams, apply_params, cotta_augment, draw_params
from cema_cli.strategies.randomness import batch_generator
from cema_cli.strategies.base import StrategyContext, make_config, placements_of
from cema_cli.strategies.cotta import cotta_loss, ema_update, stochastic_restore
from cema_cli.strategies.lame import LAMEConfig, affinity_matrix, lame_probabilities
from cema_cli.strategies.rotta import CSTUBank, RobustBN, timeliness_weights
from cema_cli.strategies.t3a import SupportSet, warmup_supports
from strategy_helpers import noisy_batches, strategy

FAST = {"cotta": {"augmentations": 2, "ap": 1.0}}  # ap 1: every batch takes the augmentation path
SPECS = ["lame", "t3a", "cotta", "cotta@edge", "rotta", "rotta@edge"]


def build(spec: str, channel_config: ChannelConfig | None = None):
    method, _, placement = spec.partition("@")
    options = {**FAST.get(method, {}), **({"placement": placement} if placement else {})}
    return strategy(method, channel_config, **options)


def run_logits(spec: str, channel_config: ChannelConfig | None, batches) -> tuple[list[torch.Tensor], object]:
    s = build(spec, channel_config)
    out = []
    for batch in batches:
        out.append(s.step(batch))
        s.context.channel.tick()
    return out, s


# --- contracts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_scored_logits_come_before_the_update(spec):
    s = build(spec)
    (batch,) = noisy_batches(1, size=96)  # one RoTTA update at sample 64
    before = s.predict(batch)
    scored = s.step(batch)
    s.context.channel.tick()
    after = s.predict(batch)
    assert torch.equal(scored, before)
    if spec == "lame":  # stateless (section 9.6 trap 7)
        assert torch.equal(after, before)
    else:
        assert not torch.allclose(after, before, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_logits_and_a_budget_that_never_binds_changes_nothing(spec):
    batches = noisy_batches(3, size=32)
    first, _ = run_logits(spec, None, batches)
    again, _ = run_logits(spec, None, batches)
    ample, _ = run_logits(spec, ChannelConfig(uplink_budget_bytes=10**9, downlink_budget_bytes=10**9), batches)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, again, ample))


@pytest.mark.parametrize("method", ["cotta", "rotta"])
def test_cloud_placement_with_an_unlimited_channel_predicts_exactly_as_edge(method):
    batches = noisy_batches(4, size=32)  # RoTTA updates at samples 64 and 128
    cloud, c = run_logits(method, None, batches)
    edge, e = run_logits(f"{method}@edge", None, batches)
    assert all(torch.equal(a, b) for a, b in zip(cloud, edge))
    assert c.context.channel.downlink.stats.delivered >= 1
    assert c.work.cloud_backward == e.work.edge_backward > 0 and c.work.edge_backward == 0


@pytest.mark.parametrize("method", ["lame", "t3a"])
def test_edge_only_methods_send_nothing_and_do_no_backward(method):
    assert placements_of(STRATEGIES.get(method)) == ("edge",)
    _, s = run_logits(method, None, noisy_batches(2))
    up, down = s.context.channel.uplink.stats, s.context.channel.downlink.stats
    assert (up.sent, up.transmitted_bytes, down.sent, down.transmitted_bytes) == (0, 0, 0, 0)
    assert (s.work.edge_forward, s.work.edge_backward) == (128, 0)


def test_cloud_methods_declare_both_placements_and_upload_what_the_spec_says():
    assert placements_of(STRATEGIES.get("cotta")) == placements_of(STRATEGIES.get("rotta")) == ("cloud", "edge")
    _, cotta = run_logits("cotta", None, noisy_batches(2))
    assert cotta.context.channel.uplink.stats.sent == 128  # every sample
    assert cotta.context.channel.uplink.stats.transmitted_bytes == 128 * 3 * 32 * 32 + 2  # + one flag byte per batch
    _, rotta = run_logits("rotta", None, noisy_batches(2))
    stats, admitted = rotta.context.channel.uplink.stats, len(rotta.cloud.bank)
    assert stats.transmitted_bytes == 2 * 64 * 6 + (stats.sent - 2) * 3 * 32 * 32  # metadata + admitted images
    assert 0 < stats.sent - 2 < 128 and admitted <= stats.sent - 2


def test_bad_placement_and_missing_layers_are_clear():
    with pytest.raises(CemaError, match="cotta.placement='fog'"):
        make_config(STRATEGIES.get("cotta"), {"placement": "fog"}, "cotta")
    with pytest.raises(CemaError, match="rotta.optimizer"):
        make_config(STRATEGIES.get("rotta"), {"optimizer": "lbfgs"}, "rotta")
    headless = Classifier(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (0.5,) * 3, (0.5,) * 3)
    ctx = tiny_context(headless)
    with pytest.raises(CemaError, match="no final nn.Linear"):
        STRATEGIES.get("lame")(ctx, LAMEConfig())
    with pytest.raises(CemaError, match="has none"):
        STRATEGIES.get("rotta")(ctx, make_config(STRATEGIES.get("rotta"), {}, "rotta"))


def test_presets_take_the_cifar_constants():
    cifar = make_config(STRATEGIES.get("cotta"), {}, "cotta", "cifar10")
    imagenet = make_config(STRATEGIES.get("cotta"), {}, "cotta", "imagenet")
    assert (cifar.optimizer, cifar.lr, cifar.restore_prob, cifar.ap, cifar.loss) == ("adam", 1e-3, 0.01, 0.92, "teacher_ce")
    assert (imagenet.optimizer, imagenet.lr, imagenet.restore_prob, imagenet.ap, imagenet.loss) == ("sgd-n", 0.01, 0.001, 0.1, "symmetric")


# --- downlink sizes on ImageNet-shaped models (random init) --------------------------------------

def tiny_context(model: nn.Module, classes: int = 1000) -> StrategyContext:
    return StrategyContext(edge_model=model, cloud_model=lambda: model, channel=Channel(ChannelConfig()), num_classes=classes,
                           device=torch.device("cpu"), clean_samples=lambda n: torch.empty(0), seed=0)


@pytest.mark.parametrize("arch,cotta_values,rotta_values", [("resnet18", 11_689_512, 19_200), ("resnet50", 25_557_032, 106_240)])
def test_downlink_sizes_match_the_spec(arch, cotta_values, rotta_values):
    model = load_model(f"torchvision:{arch}", options=ModelOptions(random_init=True, input_size=32))
    for method, values in (("cotta", cotta_values), ("rotta", rotta_values)):
        s = STRATEGIES.get(method)(tiny_context(copy.deepcopy(model)), make_config(STRATEGIES.get(method), {}, method))
        assert sum(v.numel() for v in s.downlink_state().values()) == values
    if arch == "resnet18":  # one real sync: the bytes that cross the downlink
        s = STRATEGIES.get("cotta")(tiny_context(model), make_config(STRATEGIES.get("cotta"), {}, "cotta"))
        s.step(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
        assert s.channel.downlink.stats.transmitted_bytes == 4 * cotta_values


# --- section 6.1: the augmentation ---------------------------------------------------------------

def identity_params(flip: bool = False, order=("brightness", "gamma", "contrast", "saturation", "hue")) -> AugmentParams:
    factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "gamma": 1.0}
    return AugmentParams(tuple(order), factors, 0.0, (0, 0), 1.0, 1e-3, flip)


def test_augmentation_is_seeded_per_batch_and_clipped():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    a = cotta_augment(images, batch_generator(0, 5))
    assert torch.equal(a, cotta_augment(images, batch_generator(0, 5)))
    assert not torch.equal(a, cotta_augment(images, batch_generator(0, 6)))
    assert not torch.equal(a, cotta_augment(images, batch_generator(1, 5)))
    assert a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 255


def test_drawn_parameters_stay_in_the_spec_ranges():
    gen = batch_generator(0, 0)
    draws = [draw_params(gen, 32) for _ in range(300)]
    for p in draws:
        assert sorted(p.order) == sorted(JITTER_OPS)  # each of the five once
        for op in JITTER_OPS:
            low, high = getattr(DEFAULT, op)
            assert low <= p.factors[op] <= high
        assert abs(p.angle) <= 15 and 0.9 <= p.scale <= 1.1 and 0.001 <= p.blur_sigma <= 0.5
        assert max(abs(p.shift[0]), abs(p.shift[1])) <= 4  # 1/16 of the 64-px padded side
    assert {p.flip for p in draws} == {True, False}
    assert len({p.order for p in draws}) > 20  # the jitter order is drawn


def test_identity_parameters_only_clip():
    x = torch.rand(2, 3, 12, 12) * 1.4 - 0.2
    out = apply_params(x, identity_params(), torch.zeros_like(x))
    assert torch.allclose(out, x.clamp(0, 1), atol=1e-5)


def test_noise_comes_after_the_batch_wide_flip_and_the_final_clip_after_the_noise():
    x, noise = torch.rand(2, 3, 12, 12), torch.randn(2, 3, 12, 12)
    flipped = apply_params(x, identity_params(flip=True), noise)
    plain = apply_params(x, identity_params(flip=False), torch.zeros_like(x))
    assert torch.allclose(flipped, (plain.flip(-1) + 0.005 * noise).clamp(0, 1), atol=1e-6)
    assert torch.allclose(plain[0], apply_params(x[:1], identity_params(), torch.zeros(1, 3, 12, 12))[0], atol=1e-6)


def test_jitter_runs_in_the_drawn_order_with_the_clamp_before_gamma():
    x = torch.rand(1, 3, 8, 8)
    factors = {"brightness": 1.4, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "gamma": 0.7}
    first = AugmentParams(("brightness", "gamma", "contrast", "saturation", "hue"), factors, 0.0, (0, 0), 1.0, 1e-3, False)
    second = AugmentParams(("gamma", "brightness", "contrast", "saturation", "hue"), factors, 0.0, (0, 0), 1.0, 1e-3, False)
    zero = torch.zeros_like(x)
    assert torch.allclose(apply_params(x, first, zero), ((x * 1.4).clamp(0, 1).clamp(1e-8, 1) ** 0.7), atol=1e-5)
    assert torch.allclose(apply_params(x, second, zero), (x.clamp(1e-8, 1) ** 0.7 * 1.4).clamp(0, 1), atol=1e-5)


def test_padding_replicates_edges_so_a_flat_image_stays_flat_under_rotation():
    x = torch.full((1, 3, 16, 16), 0.5)
    params = AugmentParams(identity_params().order, identity_params().factors, 15.0, (2, -2), 1.1, 0.5, False)  # within the crop: no zero fill
    assert torch.allclose(apply_params(x, params, torch.zeros_like(x)), x, atol=1e-5)


# --- section 9: LAME -----------------------------------------------------------------------------

def test_lame_rbf_affinity_and_laplacian_iterations_on_three_samples():
    # f1 = f3 = (1, 0), f2 = (0, 1): D12 = D23 = sqrt 2, D13 = 0. knn 2 counts the self-distance:
    # d = (0, sqrt 2, 0), sigma = sqrt(2)/3, W_off = exp(-2 / (2 * 2/9)) = exp(-4.5).
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    config = LAMEConfig(knn=2)
    w = math.exp(-4.5)
    assert torch.allclose(affinity_matrix(nn.functional.normalize(features, dim=1), config),
                          torch.tensor([[1, w, 1], [w, 1, w], [1, w, 1]]), atol=1e-6)
    p = [[0.7, 0.3], [0.4, 0.6], [0.45, 0.55]]
    kernel = [[1, w, 1], [w, 1, w], [1, w, 1]]
    a = [[-math.log(v + 1e-10) for v in row] for row in p]
    y = [softmax2([-v for v in row]) for row in a]
    old = math.inf
    for t in range(100):  # section 9.2 item 5, written out
        q = [[sum(kernel[i][j] * y[j][c] for j in range(3)) for c in range(2)] for i in range(3)]
        y = [softmax2([-a[i][c] + q[i][c] for c in range(2)]) for i in range(3)]
        energy = sum(a[i][c] * y[i][c] - q[i][c] * y[i][c] + y[i][c] * math.log(max(y[i][c], 1e-20)) for i in range(3) for c in range(2))
        if t > 1 and abs(energy - old) <= 1e-8 * abs(old):
            break
        old = energy
    logits = torch.tensor(p).log()
    got = lame_probabilities(features, logits, config)
    assert torch.allclose(got, torch.tensor(y), atol=1e-5)
    assert got[2].argmax() == 0  # sample 3 follows its twin, sample 1, against its own 0.55


def softmax2(v: list[float]) -> list[float]:
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def test_lame_knn_affinity_excludes_self_and_batch_of_one_returns_p():
    features = nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    knn = affinity_matrix(features, LAMEConfig(affinity="kNN", knn=1))
    assert torch.equal(knn, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    sym = affinity_matrix(features, LAMEConfig(affinity="kNN", knn=1, force_symmetry=True))
    assert torch.equal(sym, (knn + knn.T) / 2)
    logits = torch.tensor([[2.0, 0.0]])
    assert torch.equal(lame_probabilities(torch.ones(1, 2), logits, LAMEConfig()), logits.softmax(1))


def test_lame_returns_log_probabilities():
    s = build("lame")
    (batch,) = noisy_batches(1)
    logits = s.step(batch)
    assert torch.allclose(logits.exp().sum(1), torch.ones(len(batch)), atol=1e-5)


# --- section 10: T3A -----------------------------------------------------------------------------

def test_t3a_filter_keeps_the_lowest_entropy_supports_per_class():
    features = torch.arange(12, dtype=torch.float32).view(6, 2)
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    entropies = torch.tensor([0.5, 0.9, 0.1, 0.2, 0.3, 0.4])
    s = SupportSet(features, labels, entropies)
    s.filter(2, 3)
    assert s.labels.tolist() == [0, 0, 1, 1] and s.entropies.tolist() == pytest.approx([0.2, 0.4, 0.1, 0.3])
    assert torch.equal(s.features, features[[3, 5, 2, 4]])
    every = SupportSet(features, labels, entropies)
    every.filter(-1, 3)  # -1 keeps all (section 10.6 trap 1)
    assert len(every.labels) == 6


def test_t3a_prototypes_and_warmup_labels():
    s = SupportSet(torch.tensor([[3.0, 4.0], [2.0, 0.0]]), torch.tensor([0, 0]), torch.zeros(2))
    # (0.6, 0.8) + (1, 0) = (1.6, 0.8) -> / sqrt(3.2); class 1 has no support: zero
    expected = torch.tensor([[1.6, 0.8], [0.0, 0.0]]) / torch.tensor([[math.sqrt(3.2)], [1.0]])
    assert torch.allclose(s.prototypes(2), expected, atol=1e-6)
    # head(W_c) = W W^T + b: a large bias on class 1 relabels row 0
    warm = warmup_supports(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.0, 5.0]))
    assert warm.labels.tolist() == [1, 1]


# --- section 11: CoTTA ---------------------------------------------------------------------------

def test_cotta_teacher_ema_and_stochastic_restore():
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    nn.init.constant_(teacher.weight, 1.0), nn.init.constant_(student.weight, 0.0)
    ema_update(teacher, student, 0.999)
    assert torch.allclose(teacher.weight, torch.full((2, 3), 0.999))
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model.register_parameter("token", nn.Parameter(torch.zeros(5)))
    source = {k: torch.full_like(v, 7.0) for k, v in model.named_parameters() if k != "token"}
    stochastic_restore(model, source, 0.5, batch_generator(0, 3, 1))
    gen = batch_generator(0, 3, 1)
    for name, p in model.named_parameters():
        if name == "token":
            assert torch.equal(p, torch.zeros(5))  # not a weight or bias: never restored
            continue
        hit = torch.rand(p.shape, generator=gen) < 0.5
        assert torch.equal(p[hit], torch.full_like(p[hit], 7.0)) and not (p[~hit] == 7.0).any()


def test_cotta_loss_forms():
    s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    ps, pt = s.softmax(1), t.softmax(1)
    ce = -(pt * ps.log()).sum()
    assert cotta_loss(s, t, "teacher_ce") == pytest.approx(float(ce), abs=1e-6)
    assert cotta_loss(s, t, "symmetric") == pytest.approx(float(0.5 * ce - 0.5 * (ps * pt.log()).sum()), abs=1e-6)


# --- section 12: RoTTA ---------------------------------------------------------------------------

def test_rotta_bank_quota_eviction_and_ages():
    bank = CSTUBank(capacity=4, num_classes=2)  # quota 2 per class
    score = bank.score
    assert score(0, 0.0) == pytest.approx(0.5) and score(4, math.log(2)) == pytest.approx(1 / (1 + math.exp(-1)) + 1)
    assert bank.add("a", 0, 0.5) and bank.add("b", 0, 0.2)
    assert [i.age for i in bank.classes[0]] == [2, 1]  # every attempt ages every item, the new one too
    # class 0 at its quota: evict its worst only if it scores above the newcomer
    assert not bank.add("c", 0, 0.69)  # a: 1/(1+e^-0.5)+0.5/ln2 = 1.3435 < 0.5 + 0.69/ln 2 = 1.4955
    assert bank.add("d", 0, 0.0)  # 1.35 > 0.5: a (highest score) goes
    assert [i.data for i in bank.classes[0]] == ["b", "d"]
    assert bank.add("e", 1, 0.9) and bank.add("f", 1, 0.9)  # bank full now: 4 items
    # class 1 at quota; class 0 under quota is impossible now, so use a 3-class bank for majority eviction
    big = CSTUBank(capacity=3, num_classes=2)  # quota 1.5
    for data, label in (("x", 0), ("y", 0), ("z", 1)):
        big.add(data, label, 0.0)
    assert [[i.data for i in c] for c in big.classes] == [["x", "y"], ["z"]]
    assert not big.add("w", 1, 1.0)  # class 1 at quota (1 >= 1.5 is false -> under quota): full, majority class 0
    assert big.add("v", 1, 0.0)  # scores 0.5 < x's: x (oldest of the majority) is evicted
    data, ages = big.read()
    assert data == ["y", "z", "v"] and torch.allclose(ages, torch.tensor([4, 3, 1]) / 3)


def test_rotta_bank_ties_go_to_the_last_item_found():
    bank = CSTUBank(capacity=2, num_classes=4)  # quota 0.5: a class is under it only while empty
    bank.add("p", 0, 0.3), bank.add("q", 1, 0.3)
    bank.classes[0][0].age = bank.classes[1][0].age = 5  # equal scores in both majority classes
    assert bank.add("r", 2, 0.0)  # full, class 2 under quota: the last item found (class 1's) goes
    assert [[i.data for i in c] for c in bank.classes] == [["p"], [], ["r"], []]


def test_timeliness_weights():
    assert torch.allclose(timeliness_weights(torch.tensor([0.0, 1.0])), torch.tensor([0.5, math.exp(-1) / (1 + math.exp(-1))]))


def test_robust_bn_mixes_batch_moments_into_its_running_ones():
    bn = nn.BatchNorm2d(1)
    bn.running_mean.fill_(1.0), bn.running_var.fill_(4.0)
    rbn = RobustBN(bn, alpha=0.05)
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1)  # batch mean 3, biased variance 5
    out = rbn.train()(x)
    mean, var = 0.95 * 1 + 0.05 * 3, 0.95 * 4 + 0.05 * 5
    assert rbn.running_mean.item() == pytest.approx(mean) and rbn.running_var.item() == pytest.approx(var)
    assert torch.allclose(out.flatten(), (x.flatten() - mean) / math.sqrt(var + 1e-5))
    rbn.eval()
    assert torch.allclose(rbn(x).flatten(), (x.flatten() - mean) / math.sqrt(var + 1e-5))
    assert rbn.running_mean.item() == pytest.approx(mean)  # eval mode leaves the moments alone


def test_rotta_uploads_count_images_and_its_metadata_travels_as_control():
    """Section 12.6: one metadata packet per batch (bytes counted) and the admitted images; only
    the images are uploads (a row's ``uploads`` and the images exposed to the cloud)."""
    s = strategy("rotta")
    admitted = 0
    for batch in noisy_batches(3):
        s.step(batch)
        admitted += len(s.positions)
        s.channel.tick()
    up = s.channel.uplink
    assert up.control_stats.sent == 3
    assert up.stats.sent - up.control_stats.sent == admitted > 0
