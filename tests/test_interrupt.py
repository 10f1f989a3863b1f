"""Ctrl-C during a run keeps every finished (method, domain) row in results.csv."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cema_cli.results.schema import read_results
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import Strategy


class InterruptInSecondDomain(Strategy):
    """Source predictions; the second instance (reset-each-shift: the second domain) is
    'interrupted by the user' on its second batch, as Ctrl-C would be."""

    instances = 0

    def __init__(self, context, config) -> None:
        super().__init__(context, config)
        type(self).instances += 1
        self.domain, self.batches = type(self).instances, 0
        self.model = context.edge_model.eval()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.domain == 2 and self.batches == 2:
            raise KeyboardInterrupt
        return self.predict(images)


@pytest.fixture
def interrupting(monkeypatch):
    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))  # registered for this test only
    monkeypatch.setattr(InterruptInSecondDomain, "instances", 0)
    STRATEGIES.register("interrupt-test", InterruptInSecondDomain, "raises KeyboardInterrupt in the second domain")


def test_ctrl_c_keeps_the_finished_rows(cli, tmp_path, interrupting):
    result = cli("compare", "--methods", "bn,interrupt-test", "--corruption", "gaussian_noise,contrast",
                 "--samples", "256", "--out", str(tmp_path))
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output
    rows = read_results(tmp_path / "results.csv")  # complete, readable rows
    finished = [("bn", "gaussian_noise"), ("interrupt-test", "gaussian_noise"), ("bn", "contrast")]
    assert list(zip(rows["method"], rows["corruption"])) == finished
    assert (rows["samples"] == 256).all()
    batches = pd.read_csv(tmp_path / "batches.csv")
    assert set(zip(batches["method"], batches["corruption"])) == set(finished) and len(batches) == 3 * 4
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["finished_rows"] == 3
