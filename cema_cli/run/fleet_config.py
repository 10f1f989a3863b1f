"""What defines a fleet (issue 12, section 2): N edges, each with its own stream, link and
optionally its own edge model, sharing one cloud. No torch import: the CLI validates a fleet
before anything heavy loads; cema_cli/run/fleet.py runs it.

``--edges N`` builds N edges whose corruption order is the run's order rotated by i positions
(edge i starts at the run's i-th corruption); a TOML ``[fleet]`` table with ``[[fleet.edges]]``
entries gives each edge its own settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cema_cli.config import ChannelConfig, RunConfig, parse_bytes
from cema_cli.errors import CemaError, unknown_name

CLOUD_BATCHING = ("per-edge", "pooled")  # per-edge: one edge's uploads per cloud batch; pooled: their union
STUDENTS = ("per-edge", "shared")  # per-edge: one cloud copy of the edge model per edge; shared: one, broadcast
FOUNDATIONS = ("shared", "per-edge")  # CEMA's foundation model: one for the fleet, or one copy per edge (ablation)
SCHEDULERS = ("round-robin", "fifo", "lowest-entropy-first")
# Stream and model settings an edge may set for itself; everything else is the run's.
EDGE_RUN_KEYS = ("corruptions", "severities", "samples", "protocol", "order", "dirichlet", "label_sampler", "gradual",
                 "edge", "edge_checkpoint")
EDGE_KEYS = EDGE_RUN_KEYS + ("channel",)
FLEET_KEYS = ("edges", "cloud_batching", "student", "foundation", "cloud_capacity", "cloud_gflops_per_tick", "scheduler",
              "independent")


@dataclass(frozen=True)
class EdgeSpec:
    """One edge's own settings: RunConfig fields (``run``) and ChannelConfig fields (``channel``)
    that replace the run's; an empty spec is the run's stream with corruptions rotated."""

    run: dict[str, Any] = field(default_factory=dict)
    channel: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetConfig:
    """The fleet and its cloud: batching, student and foundation policies, capacity, scheduler.
    ``cloud_capacity``: cloud steps per tick (None = unlimited); ``cloud_gflops_per_tick``: a
    compute budget in counted GFLOPs per tick (None = unlimited; see fleet.ComputeCredit);
    ``independent``: also run each edge alone for the collaboration gain."""

    edges: tuple[EdgeSpec, ...] = (EdgeSpec(),)
    cloud_batching: str = "per-edge"
    student: str = "per-edge"
    foundation: str = "shared"
    cloud_capacity: int | None = None
    cloud_gflops_per_tick: float | None = None
    scheduler: str = "round-robin"
    independent: bool = True

    def validate(self) -> "FleetConfig":
        if not self.edges:
            raise CemaError("a fleet needs at least one edge; give --edges 1 or more, or at least one [[fleet.edges]] entry.")
        for kind, value, valid in (("cloud batching", self.cloud_batching, CLOUD_BATCHING), ("student policy", self.student, STUDENTS),
                                   ("foundation policy", self.foundation, FOUNDATIONS), ("scheduler", self.scheduler, SCHEDULERS)):
            if value not in valid:
                raise unknown_name(kind, value, valid)
        if self.cloud_capacity is not None and (isinstance(self.cloud_capacity, bool) or not isinstance(self.cloud_capacity, int)
                                                or self.cloud_capacity < 1):
            raise CemaError(f"--cloud-capacity {self.cloud_capacity!r} must be a whole number of cloud steps per tick, 1 or more "
                            "(omit it for an unlimited cloud).")
        budget = self.cloud_gflops_per_tick
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < float("inf")):
            raise CemaError(f"--cloud-gflops-per-tick {budget!r} must be a positive, finite number of GFLOPs "
                            "(omit it for an unlimited cloud).")
        if self.cloud_batching == "pooled" and self.student != "shared":
            raise CemaError("--cloud-batching pooled trains one cloud model on the union of the edges' uploads; "
                            "use --student shared with it (or --cloud-batching per-edge).")
        return self

    @property
    def size(self) -> int:
        return len(self.edges)

    def alone(self, index: int) -> "FleetConfig":
        """Edge ``index`` as a fleet of one (its independent single-edge run); same cloud options."""
        return replace(self, edges=(self.edges[index],), cloud_batching="per-edge", student="per-edge", independent=False)


def rotated_edges(count: int) -> tuple[EdgeSpec, ...]:
    """``--edges N``: N edges on the run's stream, edge i's corruption order rotated by i (set by ``edge_config``)."""
    if count < 1:
        raise CemaError(f"--edges {count} must be 1 or more edges.")
    return tuple(EdgeSpec(run={"rotate": i}) for i in range(count))


def edge_config(base: RunConfig, spec: EdgeSpec) -> RunConfig:
    """The RunConfig of one edge: the run's, its corruptions rotated (``--edges N``) or replaced by
    the edge's own settings, its channel updated by the edge's link."""
    run = dict(spec.run)
    shift = run.pop("rotate", 0) % len(base.corruptions)
    corruptions = base.corruptions[shift:] + base.corruptions[:shift]
    run = {k: tuple(v) if isinstance(v, list) else v for k, v in run.items()}
    return replace(base, **{"corruptions": corruptions, **run}, channel=replace(base.channel, **spec.channel))


def fleet_table(path: Path | None) -> dict[str, Any]:
    """The [fleet] table of a TOML file (empty without a file or table)."""
    if path is None:
        return {}
    from cema_cli.toml_config import read_toml

    table = read_toml(path).get("fleet", {})
    if not isinstance(table, dict):
        raise CemaError(f"{path}: fleet must be a table ([fleet]), not {table!r}.")
    return table


def fleet_from_table(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    """FleetConfig fields from a [fleet] table; unknown keys and wrong types are refused by name."""
    from cema_cli.toml_config import check_types

    unknown = sorted(set(table) - set(FLEET_KEYS))
    if unknown:
        raise CemaError(f"{path}: unknown [fleet] key(s) {', '.join(unknown)}; valid: {', '.join(FLEET_KEYS)}.")
    annotations = {"cloud_batching": "str", "student": "str", "foundation": "str", "cloud_capacity": "int", "cloud_gflops_per_tick": "float", "scheduler": "str",
                   "independent": "bool"}
    check_types(path, "[fleet] ", {k: v for k, v in table.items() if k != "edges"}, annotations)
    values = {k: v for k, v in table.items() if k != "edges"}
    if "edges" in table:
        entries = table["edges"]
        if isinstance(entries, int) and not isinstance(entries, bool):
            values["edges"] = rotated_edges(entries)
        elif isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
            values["edges"] = tuple(edge_spec(path, k, e) for k, e in enumerate(entries))
        else:
            raise CemaError(f"{path}: [fleet] edges must be a count or [[fleet.edges]] tables, not {entries!r}.")
    return values


def edge_spec(path: Path, index: int, entry: dict[str, Any]) -> EdgeSpec:
    """One [[fleet.edges]] entry: stream and model keys, and a ``channel`` table of link settings
    (budgets as byte counts or text such as 16kB)."""
    from cema_cli.toml_config import check_types

    where = f"[[fleet.edges]] #{index + 1}"
    unknown = sorted(set(entry) - set(EDGE_KEYS))
    if unknown:
        raise CemaError(f"{path}: unknown {where} key(s) {', '.join(unknown)}; valid: {', '.join(EDGE_KEYS)}.")
    check_types(path, f"{where} ", {k: v for k, v in entry.items() if k != "channel"},
                {f.name: f.type for f in fields(RunConfig) if f.name in EDGE_RUN_KEYS})
    link = entry.get("channel", {})
    if not isinstance(link, dict):
        raise CemaError(f"{path}: {where} channel must be a table of link settings, not {link!r}.")
    valid = {f.name for f in fields(ChannelConfig)}
    unknown = sorted(set(link) - valid)
    if unknown:
        raise CemaError(f"{path}: unknown {where} channel key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}.")
    link = {k: parse_bytes(v) if k.endswith("_budget_bytes") and isinstance(v, str) else v for k, v in link.items()}
    check_types(path, f"{where} channel ", link, {f.name: f.type for f in fields(ChannelConfig)})
    return EdgeSpec(run={k: v for k, v in entry.items() if k != "channel"}, channel=link)


def edge_configs(base: RunConfig, fleet: FleetConfig) -> list[RunConfig]:
    """Every edge's validated RunConfig; a bad edge setting names the edge."""
    configs = []
    for index, spec in enumerate(fleet.edges):
        try:
            configs.append(edge_config(base, spec).validate())
        except CemaError as error:
            raise CemaError(f"edge {index}: {error}") from None
    return configs
