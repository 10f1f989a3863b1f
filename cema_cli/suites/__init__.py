"""Shipped benchmark suites: TOML run configurations (``--config`` files) named for
``cema sweep --suite NAME``. No torch import."""

from __future__ import annotations

from pathlib import Path

from cema_cli.errors import CemaError, unknown_name

SUITES_DIR = Path(__file__).parent


def suite_names() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def suite_path(name: str) -> Path:
    """The shipped TOML file of suite ``name``; an unknown name is refused with the valid ones."""
    path = SUITES_DIR / f"{name}.toml"
    if not path.is_file():
        raise unknown_name("suite", name, suite_names())
    return path


def config_or_suite(config: Path | None, suite: str | None) -> Path | None:
    """The TOML file a run reads: ``--config FILE`` or the shipped ``--suite NAME`` (not both)."""
    if config is not None and suite is not None:
        raise CemaError(f"--config {config} and --suite {suite} both name a run configuration; give one of them.")
    return suite_path(suite) if suite is not None else config
