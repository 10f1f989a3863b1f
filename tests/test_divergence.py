"""A diverged or collapsed run is flagged, not reported as a result (issue 15, item 1): the row's
``status`` names what went wrong, the terminal says it in one line, and the run exits 3."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import pytest
import torch
from torch import nn

import cema_cli.cli.common as cli_module
from cema_cli.link.channel import Channel
from cema_cli.config import ChannelConfig
from cema_cli.run.engine import run_stream
from cema_cli.errors import Diverged
from cema_cli.results.health import check_status, collapse_status
from cema_cli.models import load_model
from cema_cli.strategies.base import Strategy
from cema_cli.strategies.tent import TentConfig, make_tent
from strategy_helpers import context, dataset

UNIFORM = Counter({c: 6 for c in range(10)})  # 60 labels, 10 classes
HEALTHY = (UNIFORM, UNIFORM)  # a first batch predicted as spread as its labels


# --- the collapse rule on hand-made class counts ------------------------------------------------

def test_all_predictions_in_one_class_while_labels_are_uniform_is_a_collapse():
    stuck = (Counter({0: 60}), UNIFORM)
    assert collapse_status([HEALTHY, stuck]) == "collapsed: 100% of predictions in 1 class from batch 2 (labels: 10%)"


def test_a_collapse_after_healthy_batches_is_found_from_where_it_began():
    stuck = (Counter({1: 57, 6: 3}), UNIFORM)
    assert collapse_status([HEALTHY, HEALTHY, stuck, stuck]) == "collapsed: 95% of predictions in 1 class from batch 3 (labels: 10%)"
    nearly = (Counter({1: 40, 6: 14, 2: 6}), UNIFORM)  # 90% in two classes: the stretch starts here
    assert collapse_status([HEALTHY, nearly, stuck]) == "collapsed: 95% of predictions in 2 classes from batch 2 (labels: 20%)"
    assert collapse_status([HEALTHY]) == "ok"  # one batch: nothing after the first to judge


def test_a_model_concentrated_before_it_adapted_is_the_source_behaviour_not_a_collapse():
    """The embedded source model puts every gaussian_noise-5 digit in one class: a measurement."""
    stuck = (Counter({8: 60}), UNIFORM)
    assert collapse_status([stuck, stuck, stuck]) == "ok"
    sorted_first = (Counter({0: 60}), Counter({0: 60}))  # a class-sorted stream starts with one class: no excuse
    assert collapse_status([sorted_first, stuck, stuck]) == "collapsed: 100% of predictions in 1 class from batch 2 (labels: 10%)"
    source_on_sorted = (Counter({8: 60}), Counter({0: 60}))  # the source model's class 8 on a class-sorted start
    assert collapse_status([source_on_sorted, stuck, stuck]) == "ok"


def test_a_label_shifted_stream_predicted_as_it_is_stays_ok():
    labels = Counter({3: 40, 7: 16, 1: 2, 2: 2})  # 93% of the labels in two classes
    assert collapse_status([HEALTHY, (labels, labels)]) == "ok"
    assert collapse_status([HEALTHY, (Counter({3: 44, 7: 16}), labels)]) == "ok"  # 4 labels outside: too little evidence


def test_a_stream_too_short_to_tell_stays_ok():
    assert collapse_status([HEALTHY, (Counter({5: 9}), Counter(range(9)))]) == "ok"  # 7 labels outside two classes < 10


def test_predictions_must_leave_less_than_half_of_what_the_labels_leave_outside_two_classes():
    labels = Counter({0: 45, 1: 40, 2: 8, 3: 7})  # 15 labels outside the two most frequent classes
    assert collapse_status([HEALTHY, (Counter({0: 46, 1: 45, 2: 9}), labels)]) == "ok"  # 91% in two, 9 outside: over 15 / 2
    assert collapse_status([HEALTHY, (Counter({0: 47, 1: 46, 2: 7}), labels)]).startswith("collapsed: 93% of predictions in 2 classes")


def test_the_share_threshold_is_the_option():
    spread = (Counter({1: 50, 6: 5, 2: 5}), UNIFORM)  # 92% in two classes
    assert collapse_status([HEALTHY, spread], share=0.9).startswith("collapsed: 92% of predictions in 2 classes from batch 2")
    assert collapse_status([HEALTHY, spread], share=0.95) == "ok"


def test_check_status_names_every_bad_row_and_exits_3():
    rows = [{"method": "tent", "corruption": "fog", "severity": 5, "status": "diverged: non-finite logits at batch 2"},
            {"method": "bn", "corruption": "fog", "severity": 5, "status": "ok"}]
    with pytest.raises(Diverged, match="1 result.* tent fog-5: diverged: non-finite logits at batch 2") as caught:
        check_status(rows)
    assert caught.value.exit_code == 3
    check_status(rows[1:])  # all ok: no error


# --- the engine's checks --------------------------------------------------------------------------

class Scripted(Strategy):
    """Returns scripted logits per batch; its 'edge model' is a Linear whose weight we can poison."""

    def __init__(self, logits: list[torch.Tensor], model: nn.Module) -> None:
        self.logits, self.model = iter(logits), model

    def predict(self, images):
        return next(self.logits)

    def adapted_models(self):
        return {"edge": self.model}


def stream(labels: list[list[int]]):
    return [(torch.zeros(len(b), 3, 2, 2), torch.tensor(b)) for b in labels]


def run(logits: list[torch.Tensor], labels: list[list[int]], model: nn.Module | None = None) -> str:
    strategy = Scripted(logits, model or nn.Linear(2, 2))
    return run_stream(strategy, stream(labels), Channel(ChannelConfig()), torch.device("cpu")).status


def test_non_finite_logits_name_the_first_batch():
    good, bad = torch.eye(4)[[0, 1, 2, 3]], torch.eye(4)[[0, 1, 2, 3]]
    bad[1, 2] = math.nan
    assert run([good, good, bad, good], [[0, 1, 2, 3]] * 4) == "diverged: non-finite logits at batch 3"
    bad[1, 2] = math.inf
    assert run([good, bad], [[0, 1, 2, 3]] * 2) == "diverged: non-finite logits at batch 2"


def test_non_finite_parameters_are_found_at_the_end_of_the_domain():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[1].running_var[1] = math.inf
    logits = [torch.eye(4)] * 3
    assert run(logits, [[0, 1, 2, 3]] * 3, model) == "diverged: non-finite parameter edge:1.running_var after batch 3"
    assert run(logits, [[0, 1, 2, 3]] * 3) == "ok"


def test_tent_with_a_nan_learning_rate_predicts_class_0_and_is_flagged():
    """The issue's `tent.lr=nan` (refused at the CLI since item 4; reachable from Python): after
    the first update every logit is nan and argmax says class 0 for every sample."""
    strategy = make_tent(context(), TentConfig(lr=math.nan, placement="edge"))
    tally = run_stream(strategy, dataset().stream("gaussian_noise", 5, 0, 192, 64), Channel(ChannelConfig()), torch.device("cpu"))
    assert tally.status == "diverged: non-finite logits at batch 2"
    assert [predicted for predicted, _ in tally.classes[1:]] == [Counter({0: 64})] * 2


# --- the CLI: status column, one line, exit 3 ----------------------------------------------------

@pytest.fixture
def one_line_errors(monkeypatch):
    monkeypatch.setattr(cli_module.err_console, "soft_wrap", True)  # no wrapping at 80 columns


def bench(cli, out, *args):
    result = cli("bench", "--samples", "256", "--out", str(out), *args)
    return result, pd.read_csv(out / "results.csv")


def assert_one_error_line(result, expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: 1 result(s) are not valid") and expected in lines[0]
    assert "Traceback" not in result.output


def test_tent_with_a_huge_learning_rate_collapses_and_exits_3(cli, tmp_path, one_line_errors):
    result, frame = bench(cli, tmp_path / "run", "-m", "tent", "-o", "tent.lr=1e6")
    assert result.exit_code == 3
    assert frame["status"][0].startswith("collapsed:") and "from batch 2" in frame["status"][0]
    assert_one_error_line(result, f"tent gaussian_noise-5: {frame['status'][0]}")


def test_nan_weights_are_diverged_from_the_first_batch_and_exit_3(cli, tmp_path, one_line_errors):
    weights = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in load_model("mnist-edge").state_dict().items()}
    torch.save(weights, tmp_path / "nan.pt")
    result, frame = bench(cli, tmp_path / "run", "-m", "source", "--edge-checkpoint", str(tmp_path / "nan.pt"))
    assert result.exit_code == 3
    assert list(frame["status"]) == ["diverged: non-finite logits at batch 1"]
    assert_one_error_line(result, "source gaussian_noise-5: diverged: non-finite logits at batch 1")


def test_a_healthy_run_is_ok_and_exits_0(cli, tmp_path):
    result, frame = bench(cli, tmp_path / "run", "-m", "tent")
    assert result.exit_code == 0, result.output
    assert list(frame["status"]) == ["ok"] and frame["accuracy"][0] > 0.5
    assert "error" not in result.stderr
