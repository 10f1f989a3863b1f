"""Checks of method options against their meaning, for the ``validate()`` method of a strategy's
config dataclass (``make_config`` calls it after the preset and the ``--option`` values apply)::

    def validate(self) -> None:
        positive_int("cloud_batch", self.cloud_batch)
        non_negative("lr", self.lr)
        one_of("optimizer", self.optimizer, OPTIMIZERS)

Each check raises ``InvalidOption``; ``make_config`` turns it into one line naming
METHOD.NAME=VALUE, the requirement and the default. No torch import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from cema_cli.errors import CemaError, close_matches

# The optimizers cema_cli.strategies.common.make_optimizer builds.
OPTIMIZERS = ("sgd", "sgd-n", "adam")  # sgd-n: Nesterov (methods-more.md section 6, "Optimisers")


class InvalidOption(CemaError):
    """Option ``name`` holds ``value``, which breaks ``requirement`` (e.g. 'must be at least 1')."""

    def __init__(self, name: str, value: Any, requirement: str) -> None:
        super().__init__(f"option {name}={value!r} {requirement}.")
        self.name, self.value, self.requirement = name, value, requirement


def positive_int(name: str, value: int) -> None:
    """A size or count that must be at least 1 (0 would stall or divide by zero)."""
    if value < 1:
        raise InvalidOption(name, value, "must be a whole number of at least 1")


def non_negative_int(name: str, value: int) -> None:
    if value < 0:
        raise InvalidOption(name, value, "must be a whole number of 0 or more")


def positive(name: str, value: float) -> None:
    """A finite number above 0: factors, temperatures, scales."""
    if not (math.isfinite(value) and value > 0):
        raise InvalidOption(name, value, "must be a finite number above 0")


def non_negative(name: str, value: float) -> None:
    """A finite number of 0 or more: learning rates, loss weights (0 turns the term off)."""
    if not (math.isfinite(value) and value >= 0):
        raise InvalidOption(name, value, "must be a finite number of 0 or more")


def unit_interval(name: str, value: float) -> None:
    """A probability, a momentum or a cosine margin: in [0, 1]."""
    if not 0 <= value <= 1:  # also false for nan
        raise InvalidOption(name, value, "must lie in [0, 1]")


def one_of(name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        close = close_matches(str(value), choices)
        raise InvalidOption(name, value, f"is not one of {', '.join(choices)}" + (f" (did you mean {close}?)" if close else ""))


def at_most(name: str, value: float, limit_name: str, limit: float, why: str) -> None:
    """A cross-option bound, e.g. replay_batch <= replay_min (the buffer must hold the draw)."""
    if value > limit:
        raise InvalidOption(name, value, f"must not exceed {limit_name} ({limit!r}): {why}")
