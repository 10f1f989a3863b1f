"""User-facing errors: one clear line that names the problem and the fix.

The CLI catches :class:`CemaError`, prints its message and exits with code 2 (no traceback
unless ``--verbose``). Code below the CLI raises these instead of printing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CemaError(Exception):
    """An error caused by the user's input or environment, with a message that says the fix."""

    exit_code = 2


def close_matches(name: str, valid: Iterable[str]) -> str:
    """The names among ``valid`` close to ``name`` (a likely typo), quoted and comma-separated."""
    return ", ".join(repr(c) for c in difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5))


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> CemaError:
    """Build the error for an unknown registry name, with close matches and the valid list."""
    valid = sorted(valid)
    close = close_matches(name, valid)
    hint = f" Did you mean {close}?" if close else ""
    return CemaError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}.")


class CheckFailed(CemaError):
    """A quality check failed (a regression against a baseline, or accuracy below a floor): exit 1."""

    exit_code = 1


class Diverged(CemaError):
    """A run finished but some result is not valid (non-finite values, or predictions collapsed
    onto one or two classes): exit 3. The rows are kept, each with its ``status``."""

    exit_code = 3


class Degraded(CemaError):
    """A run finished with valid numbers, but some row is far below the no-learning reference of
    its stream or near chance (cema_cli/results/health.py): exit 4. The rows are kept."""

    exit_code = 4


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a study, after its folder was claimed: says truly what was kept
    (``kept`` finished rows, or cells, in ``where``)."""

    def __init__(self, signal_name: str, kept: int, where: object, unit: str = "row") -> None:
        super().__init__(signal_name)
        self.signal_name, self.kept, self.where, self.unit = signal_name, kept, where, unit

    def __str__(self) -> str:
        if not self.kept:
            return (f"stopped by {self.signal_name} before any {self.unit} finished: no result was kept "
                    f"({self.where}/run.json records the stop).")
        return f"stopped by {self.signal_name}; the {self.kept} finished {self.unit}(s) are kept in {self.where}."
