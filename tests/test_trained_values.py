"""The row's ``trained_values``: the scalar values each method's learning changes on the edge
model (methods.md and methods-more.md, "what is trained"), counted from the model by hand."""

from __future__ import annotations

import pytest
from torch import nn

from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import backward_free_of, placements_of
from strategy_helpers import source_model, strategy


def norm_affine_values() -> int:
    """BN weight and bias of the embedded edge model: what Tent, (E)ATA, SAR, DeYO, CEMA train."""
    bns = [m for m in source_model("mnist-edge").modules() if isinstance(m, nn.BatchNorm2d)]
    return sum(m.weight.numel() + m.bias.numel() for m in bns)


def every_value() -> int:
    """CoTTA trains every parameter of the student (methods-more.md section 11)."""
    return sum(p.numel() for p in source_model("mnist-edge").parameters())


EXPECTED = {
    "tent": norm_affine_values, "eta": norm_affine_values, "eata": norm_affine_values,
    "sar": norm_affine_values, "deyo": norm_affine_values, "cema": norm_affine_values,
    "cema-official": norm_affine_values,
    "rotta": norm_affine_values,  # robust-BN affine parameters replace the BN ones one for one
    "cotta": every_value,
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
@pytest.mark.parametrize("placement", ["cloud", "edge"])
def test_trained_values_count_what_the_method_trains(method, placement):
    factory = STRATEGIES.get(method)
    if placement not in placements_of(factory):
        pytest.skip(f"{method} has no {placement} placement")
    options = {"placement": placement} if len(placements_of(factory)) > 1 else {}
    assert strategy(method, **options).trained_values == EXPECTED[method]()


def test_every_method_that_trains_is_counted_and_no_other():
    trains = {name for name in STRATEGIES.names() if not backward_free_of(STRATEGIES.get(name))}
    assert trains == set(EXPECTED)
    assert norm_affine_values() < every_value()  # the two rules differ on this model
