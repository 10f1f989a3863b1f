"""``--config FILE.toml``: a RunConfig from a TOML file; flags given on the command line win.

Top-level keys are RunConfig fields, ``[channel]`` holds ChannelConfig fields, and each
``[methods.<name>]`` table names a method to run (in file order) with its options.
See examples/imagenet_c_paper.toml.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from cema_cli.config import ChannelConfig, RunConfig
from cema_cli.errors import CemaError

# CLI option name -> the RunConfig (or channel) field it sets.
CLI_TO_FIELD = {
    "corruption": "corruptions", "severity": "severities", "method": "methods", "methods": "methods",
    "uplink_budget": "channel.uplink_budget_bytes", "downlink_budget": "channel.downlink_budget_bytes",
    "uplink_delay": "channel.uplink_delay_batches", "downlink_delay": "channel.downlink_delay_batches",
    "sync_period": "channel.sync_period_batches", "overflow": "channel.overflow",
    "uplink_encoding": "channel.uplink_encoding",
}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CemaError(f"config file {path} does not exist; pass the path of a TOML file.") from None
    except tomllib.TOMLDecodeError as error:
        raise CemaError(f"config file {path} is not valid TOML: {error}.") from None
    except UnicodeDecodeError:
        raise CemaError(f"config file {path} is not text (not UTF-8); pass a TOML file such as examples/imagenet_c_paper.toml.") from None
    except IsADirectoryError:
        raise CemaError(f"config file {path} is a folder; pass the path of a TOML file.") from None


def apply_toml(base: RunConfig, path: Path, explicit: set[str]) -> RunConfig:
    """``base`` (built from the flags) updated by the file, except for fields set by ``explicit`` flags."""
    data = read_toml(path)
    run_fields = {f.name for f in fields(RunConfig)} - {"channel", "method_options", "methods", "costs"}  # costs: flags only
    unknown = sorted(set(data) - run_fields - {"channel", "methods", "sweep", "fleet"})  # [sweep]: cli/cells.py; [fleet]: run/fleet_config.py
    if unknown:
        raise CemaError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(run_fields))}, [channel], [methods.NAME].")
    check_types(path, "", data, {f.name: f.type for f in fields(RunConfig) if f.name in run_fields})
    for table in ("channel", "methods"):
        if not isinstance(data.get(table, {}), dict):
            raise CemaError(f"{path}: {table} must be a table ([{table}]), not {data[table]!r}.")
    check_types(path, "[channel] ", data.get("channel", {}), {f.name: f.type for f in fields(ChannelConfig)})
    overridden = {CLI_TO_FIELD.get(name, name) for name in explicit}
    updates = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in run_fields and k not in overridden}
    config = replace(base, **updates, channel=apply_channel(base.channel, data.get("channel", {}), overridden, path))
    return apply_methods(config, data.get("methods", {}), "methods" in overridden)


TOML_TYPES = {"int": int, "str": str, "bool": bool, "float": (int, float)}


def fits(value: Any, annotation: str) -> bool:
    """Does a TOML value fit a field annotated e.g. ``int``, ``str | None``, ``tuple[int, ...]``?"""
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if part.startswith("tuple[") and isinstance(value, list):
            return all(fits(item, part[len("tuple["):].split(",")[0]) for item in value)
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


def apply_channel(channel: ChannelConfig, table: dict[str, Any], overridden: set[str], path: Path) -> ChannelConfig:
    valid = {f.name for f in fields(ChannelConfig)}
    unknown = sorted(set(table) - valid)
    if unknown:
        raise CemaError(f"{path}: unknown [channel] key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}.")
    return replace(channel, **{k: v for k, v in table.items() if f"channel.{k}" not in overridden})


def apply_methods(config: RunConfig, tables: dict[str, dict[str, Any]], methods_from_flags: bool) -> RunConfig:
    """Methods in file order (unless given as flags); --option values win over the file's.
    The file's tables for methods that do not run are left out."""
    from cema_cli.strategies import STRATEGIES

    for name in tables:
        STRATEGIES.check(name)  # a misspelt [methods.NAME] would otherwise be dropped silently
    methods = config.methods if methods_from_flags or not tables else tuple(tables)
    options = {name: {**tables.get(name, {}), **config.method_options.get(name, {})} for name in methods}
    return replace(config, methods=methods, method_options={k: v for k, v in options.items() if v or k in tables})
