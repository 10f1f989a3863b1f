"""Hand-checkable tests of every formula in shared/spec/methods.md sections 2-4."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cema_cli.models.nets import SmallResNet
from cema_cli.strategies.cema import CEMACloud, CEMAConfig, CEMAEdge, DynamicEMax, distillation_loss
from cema_cli.strategies.common import RedundancyFilter, ReplayBuffer, entropy, entropy_threshold, sample_weights, weighted_entropy_loss
from cema_cli.strategies.eata import FisherAnchor, fisher_diagonal
from cema_cli.strategies.tbr import TestTimeBatchRenorm


def test_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0, 0.0, 0.0]][:2])
    assert entropy(logits).tolist() == pytest.approx([math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))])
    assert entropy(torch.zeros(1, 10)).item() == pytest.approx(math.log(10))
    assert entropy_threshold(0.4, 1000) == pytest.approx(0.4 * 6.9078, abs=1e-4)


def test_eata_weights_and_weighted_loss():
    ent = torch.tensor([0.5, 1.0], requires_grad=True)
    weights = sample_weights(ent, 0.9)
    assert weights.tolist() == pytest.approx([math.exp(0.4), math.exp(-0.1)])
    assert not weights.requires_grad  # a constant: no gradient through the weight
    logits = torch.tensor([[0.0, 0.0]])
    assert weighted_entropy_loss(logits, 1.0).item() == pytest.approx(math.exp(1 - math.log(2)) * math.log(2))


def test_e_max_warmup_then_dynamic_rule():
    rule = DynamicEMax(e_max0=2.0, lam=1.0, warmup_samples=4, dynamic=True)
    assert rule.update(torch.tensor([1.0, 1.0])) == 2.0  # 2 samples seen: still warming up
    assert rule.update(torch.tensor([1.0, 1.0])) == 2.0  # warm-up ends: Ebar_w = 1
    assert rule.warm_mean == 1.0
    assert rule.update(torch.tensor([3.0, 3.0])) == pytest.approx(2.0 * (10 / 6) / 1.0)  # Ebar = 10/6
    half = DynamicEMax(e_max0=2.0, lam=0.5, warmup_samples=2, dynamic=True)
    half.update(torch.tensor([1.0, 1.0]))
    assert half.update(torch.tensor([1.0, 1.0])) == pytest.approx(1.0)
    static = DynamicEMax(e_max0=2.0, lam=1.0, warmup_samples=2, dynamic=False)
    static.update(torch.tensor([1.0, 1.0]))
    assert static.update(torch.tensor([5.0, 5.0])) == 2.0


def logits_with_entropy(targets: list[float], classes: int = 10) -> torch.Tensor:
    """Logits (a, 0, ..., 0) whose entropies hit the targets (found by bisection on a)."""
    rows = []
    for target in targets:
        low, high = 0.0, 50.0
        for _ in range(100):
            mid = (low + high) / 2
            row = torch.zeros(1, classes, dtype=torch.float64)
            row[0, 0] = mid
            low, high = (mid, high) if entropy(row).item() > target else (low, mid)
        rows.append(row)
    return torch.cat(rows).float()


def test_cema_edge_keeps_entropies_between_e_min_and_e_max():
    edge = CEMAEdge(SmallResNet((4, 4, 4), 1, 10), CEMAConfig(), num_classes=10)
    e_min, e_max0 = 0.02 * math.log(10), 0.4 * math.log(10)
    logits = logits_with_entropy([0.01, e_min + 0.01, 0.5, e_max0 - 0.01, e_max0 + 0.01, 2.0])
    mask, ent = edge.select(logits)
    assert mask.tolist() == [False, True, True, True, False, False]
    assert torch.allclose(ent, entropy(logits))
    assert edge.gate["below_e_min"] == 1 and edge.gate["above_e_max"] == 2  # what batches.csv records
    assert edge.gate["mean_entropy"] == pytest.approx(float(ent.mean()))


def test_a_batch_of_confident_one_class_predictions_uploads_nothing():
    """The continual lock-out (README, "CEMA in a continual stream"): every entropy at or below
    E_min, so the gate passes no sample and the cloud never sees the new domain."""
    edge = CEMAEdge(SmallResNet((4, 4, 4), 1, 10), CEMAConfig(), num_classes=10)
    logits = torch.zeros(64, 10)
    logits[:, 3] = 40.0  # one class, entropy ~0
    mask, _ = edge.select(logits)
    assert not mask.any() and edge.gate["below_e_min"] == 64


def test_redundancy_filter_and_its_moving_average():
    f = RedundancyFilter(margin=0.05, momentum=0.9)
    first = f.keep(torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))
    assert first.tolist() == [True, True] and f.mean_probs.tolist() == [1.0, 0, 0]
    second = f.keep(torch.tensor([[0.0, 1, 0], [0.9, 0.1, 0]]))  # cos 0 passes, cos 0.994 does not
    assert second.tolist() == [True, False]
    assert f.mean_probs.tolist() == pytest.approx([0.9, 0.1, 0.0])  # 0.9 m + 0.1 mean(kept)
    third = f.keep(torch.tensor([[0.9, 0.1, 0.0]]))
    assert third.tolist() == [False] and f.mean_probs.tolist() == pytest.approx([0.9, 0.1, 0.0])


def test_fisher_anchor_penalty_by_hand():
    params = [nn.Parameter(torch.tensor([1.0, 2.0]))]
    anchor = FisherAnchor(params, [torch.tensor([0.5, 0.25])], beta=2.0)
    with torch.no_grad():
        params[0].copy_(torch.tensor([2.0, 4.0]))  # moved by (1, 2)
    assert anchor.penalty().item() == pytest.approx(2.0 * (0.5 * 1 + 0.25 * 4))


def test_fisher_is_the_mean_of_squared_batch_gradients_with_predicted_labels():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    params = [model.weight, model.bias]
    images = torch.randn(6, 3)
    fisher = fisher_diagonal(model, params, images, batch_size=3)
    expected = [torch.zeros_like(p) for p in params]
    for batch in (images[:3], images[3:]):
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits, logits.argmax(1))
        for e, g in zip(expected, torch.autograd.grad(loss, params)):
            e += g**2 / 2
    for f, e in zip(fisher, expected):
        assert torch.allclose(f, e)


def make_tbr(channels: int = 3) -> TestTimeBatchRenorm:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_mean.fill_(100.0)  # source statistics that must be discarded
    return TestTimeBatchRenorm(bn).double()


def test_tbr_first_batch_initialises_the_running_moments():
    tbr = make_tbr().eval()
    x = torch.randn(8, 3, 4, 4, dtype=torch.double) * 2 + 1
    tbr(x)
    assert torch.allclose(tbr.running_mean, x.mean((0, 2, 3)))
    assert torch.allclose(tbr.running_var, x.var((0, 2, 3), unbiased=True))


def test_tbr_equals_running_statistics_in_value_and_moves_them_by_ema():
    torch.manual_seed(0)
    tbr = make_tbr().train()
    tbr(torch.randn(8, 3, 4, 4, dtype=torch.double) * 2 + 1)
    mean_r, var_r = tbr.running_mean.clone(), tbr.running_var.clone()
    x = torch.randn(8, 3, 4, 4, dtype=torch.double)
    y = tbr(x)
    shape = (1, -1, 1, 1)
    by_running = (x - mean_r.view(shape)) / torch.sqrt(var_r.view(shape) + tbr.eps) * tbr.weight.view(shape) + tbr.bias.view(shape)
    assert torch.allclose(y, by_running, atol=1e-12)
    assert torch.allclose(tbr.running_mean, 0.9 * mean_r + 0.1 * x.mean((0, 2, 3)))
    assert torch.allclose(tbr.running_var, 0.9 * var_r + 0.1 * x.var((0, 2, 3), unbiased=True))


def test_tbr_two_pass_moments_match_welford_in_value_and_gradient():
    """The faster option computes the same unbiased moments (float32: to about 1e-6 relative)."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    welford, two_pass = TestTimeBatchRenorm(bn), TestTimeBatchRenorm(bn, "two-pass")
    x = torch.randn(16, 4, 8, 8) * 3 + 2
    mean_w, var_w = welford._batch_moments(x)
    mean_t, var_t = two_pass._batch_moments(x)
    assert torch.equal(mean_w, mean_t)
    assert torch.allclose(var_t, var_w, rtol=1e-5, atol=0)
    for tbr in (welford, two_pass):
        tbr.train()(x[:8])  # first batch: initialises the running moments
    grads, weights = [], torch.randn(8, 4, 8, 8)  # a loss that is not affine in the output
    for tbr in (welford, two_pass):
        xg = x[8:].clone().requires_grad_(True)
        (tbr(xg) * weights).sum().backward()
        grads.append(xg.grad)
    assert grads[0].abs().max() > 1e-3
    assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-5)


def test_tbr_gradient_flows_through_the_batch_moments():
    tbr = make_tbr().train()
    tbr(torch.randn(8, 3, 4, 4, dtype=torch.double))
    x = torch.randn(8, 3, 4, 4, dtype=torch.double, requires_grad=True)
    tbr(x).sum().backward()
    # sum(x - mu_B) is identically 0 per channel, so through the batch moments the gradient of
    # the sum vanishes; normalising with the running moments alone would give w / sigma_R.
    assert x.grad.abs().max().item() < 1e-10
    tbr.eval()
    x2 = x.detach().clone().requires_grad_(True)
    tbr(x2).sum().backward()
    assert x2.grad[0, 0, 0, 0].item() == pytest.approx((tbr.weight[0] / torch.sqrt(tbr.running_var[0] + tbr.eps)).item())


def test_distillation_loss_three_three_one_by_hand():
    config = CEMAConfig()
    e_max0 = 0.4 * math.log(2)
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_f = (0.75, 0.25)
    e_student, e_teacher = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    w_e, w_f = math.exp(e_max0 - e_student), math.exp(e_max0 - e_teacher)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = math.log(2)
    expected = 3 * w_e * e_student + 3 * w_f * kl + 1 * w_f * ce
    assert distillation_loss(student, teacher, e_max0, config).item() == pytest.approx(expected, rel=1e-6)
    only_ce = CEMAConfig(entropy_weight=0.0, kl_weight=0.0, ce_weight=1.0)
    assert distillation_loss(student, teacher, e_max0, only_ce).item() == pytest.approx(w_f * ce, rel=1e-6)


def test_replay_buffer_is_fifo_bounded_uint8():
    buffer = ReplayBuffer(capacity=5, seed=0)
    buffer.add(torch.arange(3, dtype=torch.uint8).view(3, 1))
    buffer.add(torch.arange(3, 7, dtype=torch.uint8).view(4, 1))
    assert len(buffer) == 5 and buffer.data.dtype == torch.uint8
    assert sorted(buffer.data.flatten().tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 were the oldest
    drawn = buffer.sample(5).flatten().tolist()
    assert sorted(drawn) == [2, 3, 4, 5, 6]  # without replacement


def tiny_cloud(**options) -> tuple[CEMACloud, list[int]]:
    torch.manual_seed(0)
    cloud = CEMACloud(SmallResNet((4, 4, 4), 1, 10), SmallResNet((4, 4, 4), 1, 10), CEMAConfig(**options), 10, seed=0)
    sizes: list[int] = []
    distil = cloud.distil
    cloud.distil = lambda batch: (sizes.append(len(batch)), distil(batch))[1]  # type: ignore[method-assign]
    return cloud, sizes


def test_replay_batch_composition_32_new_plus_96_after_256_stored():
    cloud, sizes = tiny_cloud()
    images = torch.randn(32 * 10, 3, 8, 8)
    for k in range(10):
        cloud.receive(images[32 * k : 32 * (k + 1)])
        cloud.run()
    # 32-only until the buffer holds 256 (after 8 arrivals), then 32 + 96.
    assert sizes == [32] * 7 + [128] * 3
    assert cloud.steps["foundation"] == 10


def test_queue_pops_32_at_a_time_and_replay_only_step_of_128():
    cloud, sizes = tiny_cloud()
    cloud.receive(torch.randn(70, 3, 8, 8))
    assert cloud.run() is True and sizes == [32, 32] and len(cloud.queue) == 6
    cloud.receive(torch.randn(200, 3, 8, 8))  # 206 queued, 270 stored
    cloud.run()
    assert sizes[2:] == [128] * 6 and len(cloud.queue) == 14
    cloud.run()  # nothing new: buffer holds more than 256, so one replay-only step of 128
    assert sizes[-1] == 128 and cloud.steps["replay_only"] == 1
    empty, empty_sizes = tiny_cloud()
    assert empty.run() is False and empty_sizes == []
