"""A run's output folder: never replaced silently, written by one run at a time, and its
run.json tells a finished run from a running, interrupted, failed or crashed one.

- An ``--out`` that exists and is not empty is refused unless ``--force`` (which replaces the
  run files there); the default folder name is made unique instead.
- A lock file (``.cema.lock``: pid and host) excludes a second writer; a lock whose process is
  gone (SIGKILL, power loss) is stale and taken over.
- run.json ``status``: running (with ``pid`` and ``host``), finished, interrupted (Ctrl-C or
  SIGTERM), failed (a bad input found during the run, ``error`` says which) or crashed (an
  internal error). A reader that finds "running" while that process is gone reports "crashed":
  SIGKILL leaves no chance to write anything.

No torch import (``cema report`` reads the status).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cema_cli.errors import CemaError

RUN_FILES = ("results.csv", "batches.csv", "run.json", "fleet.csv", "independent.csv")
LOCK_NAME = ".cema.lock"


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse, before anything is created, an --out that is a file or already holds something."""
    if out.exists() and not out.is_dir():
        raise CemaError(f"--out {out} is a file; give a folder for the run's files (e.g. --out {out.with_suffix('')}-run).")
    if (out / LOCK_NAME).exists():
        refuse_live_holder(out)
    if out.is_dir() and not force and any(out.iterdir()):
        raise CemaError(f"--out {out} already holds files (a previous run?); give a new --out, or add --force to replace its run files.")


def unique_dir(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... when it exists (two default names in one second)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


# --- the lock ---------------------------------------------------------------------------------

def process_alive(pid: int, host: str) -> bool | None:
    """True/False for a process on this host; None when it runs elsewhere (cannot check)."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _create_lock(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
    return True


def refuse_live_holder(out: Path) -> None:
    """An error naming the process that holds ``out``'s lock, unless that process is gone."""
    holder = _read_holder(out / LOCK_NAME)
    pid, host = holder.get("pid"), holder.get("host", "?")
    if isinstance(pid, int) and process_alive(pid, host) is not False:
        raise CemaError(f"--out {out} is being written by another cema run (pid {pid} on {host}); "
                        "wait for it to finish, or give another --out.")


@dataclass
class Lock:
    """``out/.cema.lock`` held by this process; ``stale``: the holder of a dead lock taken over."""

    path: Path
    stale: dict | None = None

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def note(self) -> str | None:
        """The line that tells of a stale lock taken over (None when there was none)."""
        if self.stale is None:
            return None
        return (f"{self.path.parent}: took over the lock of pid {self.stale.get('pid', '?')} on {self.stale.get('host', '?')}, "
                "which is gone (killed or crashed); its finished results are kept.")


def acquire_lock(out: Path) -> Lock:
    """Create ``out/.cema.lock``; a live holder is an error naming it, a dead one is replaced."""
    lock = out / LOCK_NAME
    try:
        created = _create_lock(lock)
    except OSError:  # a full disk: nothing half-written stays behind
        lock.unlink(missing_ok=True)
        raise
    if created:
        return Lock(lock)
    refuse_live_holder(out)
    stale = _read_holder(lock)
    lock.unlink(missing_ok=True)  # stale: its process is gone
    if not _create_lock(lock):
        raise CemaError(f"--out {out} was claimed by another cema run just now; give another --out.")
    return Lock(lock, stale)


@dataclass
class Claim:
    """A folder held by this process: the lock, and whether the folder is ours to remove."""

    out: Path
    lock: Lock
    created: bool

    def release(self) -> None:
        self.lock.release()

    def discard(self) -> None:
        """Remove what this run wrote (nothing worth keeping) and the folder if it made it."""
        for name in RUN_FILES:
            (self.out / name).unlink(missing_ok=True)
        self.release()
        if self.created and not any(self.out.iterdir()):
            self.out.rmdir()


def claim(out: Path, force: bool) -> Claim:
    """Create and lock ``out``; re-check under the lock that it holds no other run's files."""
    check_out_dir(out, force)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out)
    if not force and any(path.name != LOCK_NAME for path in out.iterdir()):
        lock.release()
        raise CemaError(f"--out {out} already holds files (a run that just finished?); give a new --out, or add --force.")
    for name in RUN_FILES if force else ():
        (out / name).unlink(missing_ok=True)
    return Claim(out, lock, created)


# --- reading the status -----------------------------------------------------------------------

def run_status(folder: Path) -> tuple[str, str]:
    """(status, detail) of the run in ``folder``, from its run.json; "crashed" for a "running"
    run whose process is gone. ("unknown", why) when there is no readable run.json."""
    try:
        meta = json.loads((folder / "run.json").read_text())
    except FileNotFoundError:
        return "unknown", "no run.json"
    except (OSError, ValueError) as error:
        return "unknown", f"unreadable run.json ({error})"
    status, rows = meta.get("status", "unknown"), meta.get("finished_rows", meta.get("done", "?"))
    history = session_history(meta.get("sessions", []))
    if status == "running":
        pid, host = meta.get("pid"), meta.get("host", "?")
        alive = process_alive(pid, host) if isinstance(pid, int) else None
        if alive is False:
            return "crashed", f"its process (pid {pid} on {host}) is gone without finishing; the rows it finished are kept{history}"
        if not isinstance(pid, int):
            return "running", f"its run.json names no process (an older cema wrote it), so whether it still runs cannot be told; {rows} done so far"
        where = "" if alive else f" on {host} (cannot check from here)"
        return "running", f"pid {pid}{where}; the table shows the rows finished so far"
    detail = {"interrupted": f"stopped by {meta.get('signal', 'the user')} after {rows} rows",
              "failed": f"{meta.get('error', 'an error')}; {rows} rows finished",
              "crashed": f"{meta.get('error', 'an internal error')}; {rows} rows finished",
              "failed cells": f"{len(meta.get('failed', {}))} cell(s) failed, their reasons in run.json"}.get(status, "")
    return status, (detail + history).removeprefix("; ")


def with_crashes(sessions: list[dict]) -> list[dict]:
    """A sweep's driver sessions, one still "running" whose process is gone read as "crashed"."""
    def dead(session: dict) -> bool:
        pid = session.get("pid")
        return session.get("status") == "running" and isinstance(pid, int) and process_alive(pid, session.get("host", "?")) is False

    return [{**s, "status": "crashed"} if dead(s) else s for s in sessions]


def session_history(sessions: list[dict]) -> str:
    """'; 2 sessions: session 1 crashed (pid 41 on h, 2 of 6 missing cells run), session 2 complete (...)' for a
    sweep resumed after a crash or an interrupt; '' for one session that ended well."""
    sessions = with_crashes(sessions)
    if len(sessions) < 2 and all(s.get("status") in ("complete", "running") for s in sessions):
        return ""
    parts = [f"session {i + 1} {s.get('status', '?')} (pid {s.get('pid', '?')} on {s.get('host', '?')}, {s.get('ran', '?')} of "
             f"{s.get('missing', '?')} missing cells run" + (f", {s['reused']} reused" if s.get("reused") else "") + ")"
             for i, s in enumerate(sessions)]
    return f"; {len(sessions)} session{'s' * (len(sessions) > 1)}: {', '.join(parts)}"
