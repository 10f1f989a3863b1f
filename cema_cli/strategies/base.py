"""The strategy contract: ``step(images) -> logits`` returns the prediction that is scored,
then adapts. The engine strips labels before calling it, so no method can peek."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from cema_cli.link.channel import Channel
from cema_cli.link.cloud_meter import CloudMeter
from cema_cli.errors import CemaError
from cema_cli.strategies.options import InvalidOption


@dataclass(frozen=True)
class NoOptions:
    """A strategy without hyperparameters."""


@dataclass
class StrategyContext:
    """Everything a strategy may use; it never sees files, the console or the CLI config."""

    edge_model: nn.Module  # a fresh copy of the source edge model, on ``device``
    cloud_model: Callable[[], nn.Module]  # builds a fresh source foundation model on ``device``
    channel: Channel
    num_classes: int
    device: torch.device
    clean_samples: Callable[[int], torch.Tensor]  # clean in-distribution uint8 images
    seed: int
    cache: dict[Any, Any] = field(default_factory=dict)  # shared by every domain of a run
    cloud_meter: CloudMeter = field(default_factory=CloudMeter)  # times and counts the cloud half (cloud_meter.py)


@dataclass
class WorkCounts:
    """Samples that went through forward and backward passes on each side, summed over a run
    (EATA's efficiency figure is the backward count, methods.md section 3)."""

    edge_forward: int = 0
    edge_backward: int = 0
    cloud_forward: int = 0
    cloud_backward: int = 0


class Strategy(ABC):
    """Base class: subclasses set ``config_class`` and implement ``step``. ``placements`` lists
    where the method can run, default first (see ``placements_of``); ``backward_free`` says it
    takes no gradient step anywhere. ``trained_values`` (set by a strategy that knows it) is the
    number of scalar values its learning changes, recorded in the row."""

    config_class: ClassVar[type] = NoOptions
    placements: ClassVar[tuple[str, ...]] = ("edge",)
    backward_free: ClassVar[bool] = False
    trained_values: int | None = None

    def __init__(self, context: StrategyContext, config: Any) -> None:
        self.context = context
        self.config = config
        self.work = WorkCounts()

    @abstractmethod
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The edge's prediction with its current parameters; never adapts anything."""

    def step(self, images: torch.Tensor) -> torch.Tensor:
        """Return the scored logits for this batch (computed before any update it triggers),
        then adapt. Non-adaptive strategies only predict."""
        return self.predict(images)

    def batch_log(self) -> dict[str, float]:
        """Per-batch figures for batches.csv (e.g. the current E_max)."""
        return {}

    def adapted_models(self) -> dict[str, nn.Module]:
        """The models, by role, whose parameters and buffers the engine checks for non-finite
        values at the end of every domain (default: the edge model this strategy was given)."""
        context = getattr(self, "context", None)  # test doubles may skip __init__: nothing to check
        return {"edge": context.edge_model} if context is not None else {}


def make_config(strategy_cls: type[Strategy], overrides: dict[str, Any], method: str, preset: str | None = None) -> Any:
    """The strategy's config dataclass: its defaults, then the published settings of ``preset``
    (the config class's ``presets`` table, e.g. ``{"cifar10": {"lr": 1e-3}}``), then ``overrides``.
    A config class may define ``validate()`` to check its values' meaning; it runs here."""
    config_cls = strategy_cls.config_class
    known = {f.name: f for f in fields(config_cls)}
    overrides = checked_placement(strategy_cls, overrides, method, "placement" in known)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        valid = ", ".join(known) or "none"
        raise CemaError(f"method {method!r} has no option {', '.join(unknown)}; its options are: {valid}.")
    published = getattr(config_cls, "presets", {}).get(preset, {})
    config = config_cls(**{**published, **{k: _coerce(known[k], v, method) for k, v in overrides.items()}})
    if "placement" in known:
        check_placement(strategy_cls, config.placement, method)
    if hasattr(config, "validate"):
        try:
            config.validate()
        except InvalidOption as error:
            default = known[error.name].default if error.name in known else None
            fix = f"; e.g. -o {method}.{error.name}={default} (the default)" if default is not None else ""
            raise CemaError(f"option {method}.{error.name}={error.value!r} {error.requirement}{fix}.") from None
    return config


def placements_of(target: Any) -> tuple[str, ...]:
    """Where a registered strategy can run, default first: ``("edge",)`` unless it declares
    ``placements`` (a class attribute, or an attribute of its factory)."""
    return tuple(getattr(target, "placements", ("edge",)))


def backward_free_of(target: Any) -> bool:
    """Whether a registered strategy runs without any backward pass (declared ``backward_free``)."""
    return bool(getattr(target, "backward_free", False))


def check_placement(target: Any, placement: Any, method: str) -> None:
    """The one check of a placement against the method's declared ``placements``."""
    allowed = placements_of(target)
    if placement not in allowed:
        where = "on the edge only" if allowed == ("edge",) else f"with placement {' or '.join(allowed)}"
        raise CemaError(f"option {method}.placement={placement!r}: method {method!r} cannot take placement {placement!r}; "
                        f"it runs {where}, so drop the option or set it to {allowed[0]}.")


def checked_placement(target: Any, overrides: dict[str, Any], method: str, has_field: bool) -> dict[str, Any]:
    """``overrides`` with ``placement`` checked; a method with a single placement has no such
    option, so naming that one placement is accepted and dropped."""
    if "placement" not in overrides:
        return overrides
    check_placement(target, overrides["placement"], method)
    return overrides if has_field else {k: v for k, v in overrides.items() if k != "placement"}


BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
KIND_WORDS = {bool: "true or false", int: "whole number", float: "float", str: "string"}


def _coerce(field: Any, value: Any, method: str) -> Any:
    """An --option string (or a TOML value) as the type of the field's default; anything
    that is not exactly that type (an int for a float excepted) is refused."""
    default = field.default
    kind = type(default)
    if kind not in (bool, int, float, str):  # None, a default_factory, a structured value
        return value
    if isinstance(value, str) and kind is not str:
        return _parse(value, kind, f"{method}.{field.name}")
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
        raise CemaError(f"option {method}.{field.name}={value!r} is not a {KIND_WORDS[kind]}; e.g. -o {method}.{field.name}={default} (the default).")
    return kind(value)


def _parse(text: str, kind: type, option: str) -> Any:
    if kind is bool:
        if text.strip().lower() not in BOOLEAN_WORDS:
            raise CemaError(f"option {option}={text!r} is not true or false; use true/false, 1/0 or yes/no.")
        return BOOLEAN_WORDS[text.strip().lower()]
    try:
        return kind(text)
    except ValueError:
        raise CemaError(f"option {option}={text!r} is not a {KIND_WORDS[kind]}.") from None
