"""The spine: labels never reach the strategy, the stream order is fixed by the seed, and the
engine scores exactly the logits the strategy returns."""

from __future__ import annotations

import torch

from cema_cli.link.channel import Channel
from cema_cli.config import ChannelConfig
from cema_cli.data.base import stream_order, tensor_batches
from cema_cli.run.engine import run_stream
from cema_cli.strategies.base import Strategy


class Recorder(Strategy):
    """Predicts class 0 always and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def predict(self, images):
        return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), 3).float()

    def step(self, *args):
        self.calls.append(args)
        return self.predict(args[0])


def test_engine_strips_labels_and_scores_returned_logits():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0, 0, 0])
    strategy = Recorder()
    channel = Channel(ChannelConfig())
    tally = run_stream(strategy, tensor_batches(images, labels, torch.arange(10), 4), channel, torch.device("cpu"))
    assert all(len(call) == 1 for call in strategy.calls)  # only the images, never the labels
    assert [len(call[0]) for call in strategy.calls] == [4, 4, 2]
    assert (tally.seen, tally.correct, tally.batches) == (10, 6, 3)
    assert channel.now == 3  # one tick per batch


def test_stream_order_depends_on_the_seed_only():
    assert torch.equal(stream_order(100, 3), stream_order(100, 3))
    assert not torch.equal(stream_order(100, 3), stream_order(100, 4))
    assert sorted(stream_order(100, 3).tolist()) == list(range(100))
