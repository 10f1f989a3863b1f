"""What defines a study, recorded when it starts (``grid.json``'s ``study``) and checked whenever
more cells run into its folder.

- **Fixed settings**: everything of a cell's configuration that is not a grid axis or the machine
  (dataset, samples, batch size, protocol, preset, stream, channel, costs, models, and each
  method's options). A resume with other values is refused, naming each difference, so that a
  folder never holds rows of two settings (which the seed statistics would pool).
- **Axes**: methods, corruptions, severities, seeds and budget points. A resume may add values:
  the grid grows, and each growth is written to the record's ``history``.
- **Remembered flags**: ``versus`` (the paired comparison) stays until another is given.

Settings are named as cli/options.py names them: RunConfig fields, ``channel.NAME``,
``costs.NAME``, and the axes ``methods``, ``corruptions``, ``severities``, ``seeds``,
``uplink_budgets``, ``downlink_budgets``, ``edges``, ``clouds``. No torch import.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cema_cli.config import MACHINE_FIELDS, RunConfig
from cema_cli.errors import CemaError

BUDGETS = {"uplink_budget_bytes": "uplink_budgets", "downlink_budget_bytes": "downlink_budgets"}
AXES = ("methods", "corruptions", "severities", "seeds", *BUDGETS.values())
PER_CELL = ("methods", "corruptions", "severities", "seed", "edge", "cloud", "method_options", "channel", "costs")


def fixed_settings(config: RunConfig) -> dict[str, Any]:
    """A configuration's settings that are neither an axis nor the machine, by name."""
    data = asdict(config)
    settings = {k: v for k, v in data.items() if k not in MACHINE_FIELDS + PER_CELL}
    settings.update({f"channel.{k}": v for k, v in data["channel"].items() if k not in BUDGETS})
    settings.update({f"costs.{k}": v for k, v in data["costs"].items()})
    return settings


def axis_values(config: RunConfig) -> dict[str, tuple[Any, ...]]:
    """The values a configuration takes on each axis."""
    channel = config.channel
    return {"methods": config.methods, "corruptions": config.corruptions, "severities": config.severities, "seeds": (config.seed,),
            "uplink_budgets": (channel.uplink_budget_bytes,), "downlink_budgets": (channel.downlink_budget_bytes,)}


@dataclass
class StudyRecord:
    """A study's fixed settings, axes, model pairs, method options and remembered flags."""

    settings: dict[str, Any]
    axes: dict[str, list[Any]]
    models: list[list[Any]]  # [edge, cloud] pairs
    method_options: dict[str, dict[str, Any]]
    versus: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def defaults(self) -> dict[str, Any]:
        """The settings a resume takes where no flag or file gives them (cli/options.py)."""
        edges, clouds = (tuple(dict.fromkeys(pair[k] for pair in self.models)) for k in (0, 1))
        return {**self.settings, **{k: tuple(v) for k, v in self.axes.items()}, "edges": edges, "clouds": clouds}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StudyRecord":
        return cls(**data)


def record_of(configs: list[RunConfig]) -> StudyRecord:
    """The record of a grid's cells (one-method configurations): the fixed settings they share
    (cells that differ are refused: two settings in one study), every axis value, the model
    pairs and each method's options."""
    settings = fixed_settings(configs[0])
    for config in configs[1:]:
        differing = describe(settings, fixed_settings(config))
        if differing:
            raise CemaError(f"the study's cells were made with different settings ({'; '.join(differing[:3])}); "
                            "a study holds one setting: run the others into another --out folder.")
    axes: dict[str, list[Any]] = {name: [] for name in AXES}
    options: dict[str, dict[str, Any]] = {}
    for config in configs:
        for name, values in axis_values(config).items():
            axes[name] += [v for v in values if v not in axes[name]]
        options.update({m: o for m, o in config.method_options.items() if o})
    models = list(map(list, dict.fromkeys((c.edge, c.cloud) for c in configs)))
    return StudyRecord(json.loads(json.dumps(settings)), axes, models, options)


def describe(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``name new (the study: old)`` for each setting that differs."""
    names = sorted(set(before) | set(after))
    return [f"{name} {after.get(name)!r} (the study: {before.get(name)!r})" for name in names
            if comparable(after.get(name)) != comparable(before.get(name))]


def comparable(value: Any) -> Any:
    """Tuples and lists alike (a record read back from JSON holds lists)."""
    return json.loads(json.dumps(value, default=str))


def differences(study: StudyRecord, grid: StudyRecord) -> list[str]:
    """What a new grid changes of the study's fixed settings: its settings, its model pairs, and
    the options of a method both run (new methods bring their own)."""
    found = describe(study.settings, grid.settings)
    if sorted(map(tuple, grid.models)) != sorted(map(tuple, study.models)):
        found.append(f"models {pairs(grid.models)} (the study: {pairs(study.models)})")
    for method in (m for m in grid.axes["methods"] if m in study.axes["methods"]):
        old, new = study.method_options.get(method, {}), grid.method_options.get(method, {})
        if comparable(old) != comparable(new):
            found.append(f"options of {method} {new} (the study: {old})")
    return found


def pairs(models: list[list[Any]]) -> str:
    return ", ".join(f"{edge or 'default'}/{cloud or 'default'}" for edge, cloud in models)


def growth(study: StudyRecord, grid: StudyRecord) -> dict[str, list[Any]]:
    """The axis values a new grid adds to the study (empty: nothing new)."""
    return {name: new for name in AXES if (new := [v for v in grid.axes[name] if v not in study.axes[name]])}


def merged(study: StudyRecord, grid: StudyRecord) -> StudyRecord:
    """The study with the grid's new axis values and method options added."""
    axes = {name: study.axes[name] + [v for v in grid.axes[name] if v not in study.axes[name]] for name in AXES}
    return StudyRecord(study.settings, axes, study.models, {**grid.method_options, **study.method_options}, study.versus,
                       list(study.history))
