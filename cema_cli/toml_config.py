"""``--config FILE.toml``: a run or sweep file, read and checked whole before anything runs.

Every key is honoured or refused with one line naming it:

- top-level keys: RunConfig fields, and ``methods = [...]`` (the methods to run);
- ``[channel]``: ChannelConfig fields;
- ``[methods.NAME]``: a method's options; the tables also list the methods to run, in file
  order, when the file lists them nowhere else (a table for a method the file's list leaves out
  is refused);
- ``[sweep]``: the axes of a grid, each a list (``seeds`` also a count): ``methods``,
  ``corruptions``, ``severities``, ``seeds``, ``uplink_budgets``, ``downlink_budgets``, ``edges``,
  ``clouds``. A setting is given in one place: an axis and the key it sweeps (``seeds`` and
  ``seed``, ``uplink_budgets`` and ``[channel] uplink_budget_bytes``, ...) are refused together;
- ``[fleet]``: cema_cli/run/fleet_config.py.

``RunFile.settings`` is one flat mapping of setting names (``samples``, ``seeds``,
``uplink_budgets``, ``channel.overflow``, ...); cli/options.py applies the one precedence rule
(a flag typed on the command line wins over the file). See examples/imagenet_c_paper.toml.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cema_cli.config import ChannelConfig, RunConfig, seed_list
from cema_cli.results.expected import Expected, parse_expected
from cema_cli.errors import CemaError

# [sweep] axis -> the key of the file that gives the same setting as a single value.
SWEEP_AXES = {"methods": "methods", "corruptions": "corruptions", "severities": "severities", "seeds": "seed",
              "uplink_budgets": "[channel] uplink_budget_bytes", "downlink_budgets": "[channel] downlink_budget_bytes",
              "edges": "edge", "clouds": "cloud"}
AXIS_TYPES = {"methods": "str", "corruptions": "str", "severities": "int", "uplink_budgets": "int | str",
              "downlink_budgets": "int | str", "edges": "str", "clouds": "str"}
# A single value of the file that is one point of an axis.
SINGLE_TO_AXIS = {"seed": "seeds", "edge": "edges", "cloud": "clouds",
                  "uplink_budget_bytes": "uplink_budgets", "downlink_budget_bytes": "downlink_budgets"}
TABLES = ("channel", "sweep", "fleet")
BUDGETS = ("uplink_budget_bytes", "downlink_budget_bytes")


@dataclass(frozen=True)
class RunFile:
    """A checked --config file: its settings, its method option tables and its [fleet] table."""

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    method_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    fleet: dict[str, Any] = field(default_factory=dict)
    axes: frozenset[str] = frozenset()  # the settings its [sweep] table gives


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CemaError(f"config file {path} does not exist; pass the path of a TOML file.") from None
    except tomllib.TOMLDecodeError as error:
        hint = ("; a top-level methods = [...] list and [methods.NAME] tables cannot both be given: "
                "list the methods in [sweep] methods, or drop the list") if "('methods'," in str(error) else ""
        raise CemaError(f"config file {path} is not valid TOML: {error}{hint}.") from None
    except UnicodeDecodeError:
        raise CemaError(f"config file {path} is not text (not UTF-8); pass a TOML file such as examples/imagenet_c_paper.toml.") from None
    except IsADirectoryError:
        raise CemaError(f"config file {path} is a folder; pass the path of a TOML file.") from None


def read_expected(path: Path) -> list[Expected]:
    """The published numbers of a configuration's ``[[expected]]`` tables (none: an error)."""
    entries = parse_expected(read_toml(path).get("expected", []), path)
    if not entries:
        raise CemaError(f"{path} has no [[expected]] table of published numbers; see examples/imagenet_c_paper.toml.")
    return entries


def read_run_file(path: Path) -> RunFile:
    """Read and check every key of a run or sweep file (see the module docstring)."""
    data = read_toml(path)
    run_fields = {f.name for f in fields(RunConfig)} - {"channel", "method_options", "methods", "costs"}  # costs: flags only
    unknown = sorted(set(data) - run_fields - {"methods", "expected", *TABLES})
    if unknown:
        raise CemaError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(run_fields))}, "
                        "methods, [channel], [methods.NAME], [sweep], [fleet], [[expected]].")
    parse_expected(data.get("expected", []), path)  # published numbers (cema_cli/results/expected.py): checked, not run
    for table in TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise CemaError(f"{path}: {table} must be a table ([{table}]), not {data[table]!r}.")
    top = {k: v for k, v in data.items() if k in run_fields}
    check_types(path, "", top, {f.name: f.type for f in fields(RunConfig) if f.name in run_fields})
    settings = {**run_settings(path, top), **channel_settings(path, data.get("channel", {}))}
    tables = method_tables(path, data.get("methods", {}), settings)
    axes = sweep_settings(path, data.get("sweep", {}), settings)
    settings.update(axes)
    if "methods" not in settings and tables:
        settings["methods"] = tuple(tables)
    check_tables_run(path, tables, settings.get("methods", ()))
    return RunFile(path, settings, tables, data.get("fleet", {}), frozenset(axes))


def run_settings(path: Path, top: dict[str, Any]) -> dict[str, Any]:
    """Top-level RunConfig keys as settings: a list as a tuple, a single seed or model as an axis of one."""
    settings: dict[str, Any] = {}
    for key, value in top.items():
        if isinstance(value, list) and not value:
            raise CemaError(f"{path}: {key} = [] lists nothing; list at least one value, or leave the key out.")
        settings[SINGLE_TO_AXIS.get(key, key)] = (value,) if key in SINGLE_TO_AXIS else tuple(value) if isinstance(value, list) else value
    return settings


def channel_settings(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    valid = {f.name for f in fields(ChannelConfig)}
    unknown = sorted(set(table) - valid)
    if unknown:
        raise CemaError(f"{path}: unknown [channel] key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}.")
    check_types(path, "[channel] ", table, {f.name: f.type for f in fields(ChannelConfig)})
    return {SINGLE_TO_AXIS[k] if k in BUDGETS else f"channel.{k}": (v,) if k in BUDGETS else v for k, v in table.items()}


def method_tables(path: Path, value: Any, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``methods = [...]`` (a list: into ``settings``) or ``[methods.NAME]`` tables (returned)."""
    from cema_cli.strategies import STRATEGIES

    if isinstance(value, list):
        if not value or not all(isinstance(name, str) for name in value):
            raise CemaError(f"{path}: methods = {value!r} must list method names, e.g. methods = [\"bn\", \"tent\"].")
        settings["methods"] = tuple(value)
        return {}
    if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
        raise CemaError(f"{path}: methods must be a list of names or [methods.NAME] tables of options, not {value!r}.")
    for name in value:
        STRATEGIES.check(name)  # a misspelt [methods.NAME] would otherwise be dropped silently
    return value


def sweep_settings(path: Path, table: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The [sweep] axes as settings; an axis whose setting the file also gives elsewhere is refused."""
    unknown = sorted(set(table) - set(SWEEP_AXES))
    if unknown:
        raise CemaError(f"{path}: unknown [sweep] key(s) {', '.join(unknown)}; valid axes: {', '.join(SWEEP_AXES)}.")
    axes: dict[str, Any] = {}
    for key, value in table.items():
        if key in settings:
            raise CemaError(f"{path}: [sweep] {key} and {SWEEP_AXES[key]} both set the {key}; give them in one place.")
        axes[key] = seed_list(value, f"{path}: [sweep] seeds") if key == "seeds" else axis_values(path, key, value)
    return axes


def axis_values(path: Path, key: str, value: Any) -> tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise CemaError(f"the grid is empty: [sweep] {key} has no values in {path}; give at least one.")
    check_types(path, "[sweep] ", {key: values}, {key: f"tuple[{AXIS_TYPES[key]}, ...]"})
    return tuple(values)


def check_tables_run(path: Path, tables: dict[str, Any], methods: tuple[str, ...]) -> None:
    """A [methods.NAME] table for a method that the file's own list leaves out contradicts it."""
    stray = [name for name in tables if name not in methods]
    if stray:
        raise CemaError(f"{path}: [methods.{stray[0]}] gives options for {stray[0]}, which the file's methods "
                        f"({', '.join(methods)}) leave out; add it to the list or drop the table.")


TOML_TYPES = {"int": int, "str": str, "bool": bool, "float": (int, float)}


def fits(value: Any, annotation: str) -> bool:
    """Does a TOML value fit a field annotated e.g. ``int``, ``str | None``, ``tuple[int, ...]``?"""
    if annotation.startswith("tuple[") and isinstance(value, list):
        inner = annotation[len("tuple["): annotation.rindex(",")]
        return all(fits(item, inner) for item in value)
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if part.startswith("tuple[") and isinstance(value, list):
            return fits(value, part)
        expected = TOML_TYPES.get(part)
        if expected and isinstance(value, expected) and not (isinstance(value, bool) and part != "bool"):
            return True
    return False


def check_types(path: Path, where: str, table: dict[str, Any], annotations: dict[str, Any]) -> None:
    """A value of the wrong type (``seed = "x"``) is refused by name, before anything runs."""
    for key, value in table.items():
        annotation = str(annotations.get(key, ""))
        if annotation and not fits(value, annotation):
            raise CemaError(f"{path}: {where}{key} = {value!r} is not of type {annotation}; e.g. see examples/imagenet_c_paper.toml.")
