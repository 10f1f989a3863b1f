"""The result schema: one tidy row per (method, domain). No torch import (``cema report``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cema_cli.errors import CemaError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1

# Column order of results.csv; every row carries what is needed to reproduce it.
RESULT_COLUMNS = (
    "schema_version", "method", "dataset", "corruption", "severity", "samples", "accuracy", "correct",
    "uploads", "upload_ratio", "uplink_bytes", "downlink_bytes", "delivered_uploads", "dropped_uploads",
    "queued_uploads", "uplink_budget_bytes", "downlink_budget_bytes", "param_delay_batches", "sync_events", "seconds", "images_per_s",
    "edge_gflops_per_sample", "cloud_gflops_per_sample",
    "seed", "batch_size", "protocol", "segment", "order", "dirichlet", "label_sampler", "gradual", "window",
    "edge_model", "cloud_model", "corruption_source", "constants", "channel", "preset", "method_config", "device", "cema_version", "torch_version",
    "edge_weights", "cloud_weights", "skipped_images", "amp",
    "status",  # "ok", "diverged: ..." or "collapsed: ..." (cema_cli.health)
)

BATCH_COLUMNS = (
    "schema_version", "method", "corruption", "severity", "uplink_budget_bytes", "batch", "seen", "correct", "accuracy", "uploads",
    "uplink_bytes", "downlink_bytes", "e_max",
)


# What `cema report` and `cema check` read: the tables' figures and what reproduces a run.
REQUIRED_COLUMNS = (
    "schema_version", "method", "dataset", "corruption", "severity", "samples", "accuracy", "correct",
    "uploads", "upload_ratio", "uplink_bytes", "downlink_bytes", "seconds", "images_per_s",
    "seed", "batch_size", "protocol", "edge_model", "cloud_model", "constants", "channel", "method_config",
)


def read_results(path: str | Path) -> "pd.DataFrame":
    """Read a results.csv (or a run folder holding one) and check it against this schema.

    Raises CemaError naming the missing columns, or the schema version expected and found.
    Columns beyond REQUIRED_COLUMNS are kept when present and not required, so adding a column
    keeps the schema version; renaming, removing or changing the meaning of one bumps it.
    """
    import pandas as pd

    file = Path(path) / "results.csv" if Path(path).is_dir() else Path(path)
    try:
        frame = pd.read_csv(file)
    except FileNotFoundError:
        raise CemaError(f"{file}: no such file; give a results.csv written by `cema bench` or `cema compare`.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CemaError(f"{file} is not a readable CSV file ({error}).") from None
    check_schema(frame, str(file))
    return frame


def check_schema(frame: "pd.DataFrame", name: str) -> None:
    """A results table of this schema version with every column of REQUIRED_COLUMNS."""
    if "schema_version" not in frame.columns:
        raise CemaError(f"{name} has no schema_version column: it is not a cema results.csv, "
                        f"or it predates schema version {SCHEMA_VERSION}; regenerate it with `cema bench ... --out`.")
    if frame.empty:
        raise CemaError(f"{name} has no result rows.")
    found = sorted({str(v) for v in frame["schema_version"].unique()})
    if found != [str(SCHEMA_VERSION)]:
        raise CemaError(f"{name} has schema version {', '.join(found)}; this cema reads version {SCHEMA_VERSION}. "
                        "Regenerate it with this version of cema (`cema bench ... --out`).")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CemaError(f"{name} lacks the column(s) {', '.join(missing)} of results schema version {SCHEMA_VERSION}; "
                        "it is not a cema results.csv (or was edited).")
