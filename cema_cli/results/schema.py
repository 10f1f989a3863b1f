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
    "schema_version", "method", "edge", "dataset", "corruption", "severity", "samples", "accuracy", "correct", "top5_accuracy",
    "uploads", "upload_ratio", "uplink_bytes", "downlink_bytes", "delivered_uploads", "dropped_uploads",
    "queued_uploads", "uplink_budget_bytes", "downlink_budget_bytes", "param_delay_batches", "sync_events",
    "edge_forward_samples", "edge_backward_samples", "cloud_forward_samples", "cloud_backward_samples", "seconds", "images_per_s",
    "edge_gflops_per_sample", "cloud_gflops_per_sample",
    "cloud_gflops", "cloud_backward_gflops", "cloud_exposed_images", "cloud_exposed_share",  # counted
    "cloud_seconds",  # measured (device column)
    "upload_seconds", "param_delay_seconds", "cloud_cost", "cloud_time_basis", "cost_model",  # modelled (cema_cli/link/costs.py)
    "seed", "batch_size", "protocol", "segment", "order", "dirichlet", "label_sampler", "gradual", "window", "segment_order",
    "edge_model", "cloud_model", "corruption_source", "constants", "channel", "preset", "method_config", "device", "cema_version", "git_commit", "git_dirty",
    "torch_version", "torchvision_version", "timm_version", "numpy_version", "pillow_version", "opencv_version",
    "edge_weights", "cloud_weights", "edge_weights_sha256", "cloud_weights_sha256", "edge_input_size", "cloud_input_size",
    "skipped_images", "amp", "amp_dtype", "loss_scaling", "channels_last", "tf32", "trained_values",
    "data_wait_seconds", "loader_workers", "corruption_device",  # measured / how the data was read (cema_cli/data/loading.py)
    "status",  # "ok", "diverged: ...", "collapsed: ..." or "degraded: ..." (cema_cli.results.health)
    "reference_method", "reference_accuracy",  # the no-learning reference the row was held against
    "reused_from",  # a sweep's edge-only cell: the id of the cell (another channel point) whose rows these are
    "link", "reproducible",  # simulated or live (issue 24); the live link's own columns follow:
    "link_timing", "link_shaping", "link_status", "offline_seconds", "uploads_lost", "reconnects", "wire_uplink_bytes",
    "wire_downlink_bytes", "wire_overhead", "upload_messages", "measured_upload_seconds", "measured_staleness_seconds",
    "cloud_url", "cloud_device",
)

# Which code produced a row (run/provenance.py): facts about the checkout, not numbers it computed.
PROVENANCE_COLUMNS = ("git_commit", "git_dirty")

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

    Raises CemaError naming the missing columns, the schema version expected and found, or the
    first value that is missing (a torn last line), not a number, or out of range (a percent).
    Columns beyond REQUIRED_COLUMNS are kept when present and not required, so adding a column
    keeps the schema version; renaming, removing or changing the meaning of one bumps it.
    """
    import pandas as pd

    file = Path(path) / "results.csv" if Path(path).is_dir() else Path(path)
    refuse_binary(file)
    try:
        frame = pd.read_csv(file)
    except FileNotFoundError:
        raise CemaError(f"{file}: no such file; give a results.csv written by `cema bench` or `cema compare`.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CemaError(f"{file} is not a readable CSV file ({error}).") from None
    check_schema(frame, str(file))
    check_values(frame, str(file))
    return frame


def refuse_binary(file: Path) -> None:
    """A file holding NUL bytes is no CSV text (pandas would read them as values and an error
    would echo megabytes of them): refused naming the first one's position."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return  # read_csv names the missing file
    except IsADirectoryError:
        raise CemaError(f"{file} is a folder without a results.csv; give a results.csv or the run folder holding one.") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CemaError(f"{file} holds NUL bytes (the first at byte {nul}): not a readable CSV text file, perhaps damaged; "
                        "regenerate it with cema.")


def shown(value: object, limit: int = 40) -> str:
    """A value from a user's file as a message shows it: as text (its repr when it holds control
    characters), cut to ``limit`` characters."""
    text = str(value) if str(value).isprintable() else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_schema(frame: "pd.DataFrame", name: str) -> None:
    """A results table of this schema version with every column of REQUIRED_COLUMNS."""
    if "schema_version" not in frame.columns:
        raise CemaError(f"{name} has no schema_version column: it is not a cema results.csv, "
                        f"or it predates schema version {SCHEMA_VERSION}; regenerate it with `cema bench ... --out`.")
    if frame.empty:
        raise CemaError(f"{name} has no result rows.")
    found = sorted({str(v) for v in frame["schema_version"].unique()})
    if found != [str(SCHEMA_VERSION)]:
        listed = ", ".join(shown(v) for v in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise CemaError(f"{name} has schema version {listed}; this cema reads version {SCHEMA_VERSION}. "
                        "Regenerate it with this version of cema (`cema bench ... --out`).")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CemaError(f"{name} lacks the column(s) {', '.join(missing)} of results schema version {SCHEMA_VERSION}; "
                        "it is not a cema results.csv (or was edited).")


# Cells that may be empty: files carry no constants set; edge-only methods use no cloud model.
MAY_BE_EMPTY = ("constants", "cloud_model")
# Counts and amounts: finite and never negative.
NON_NEGATIVE = ("uploads", "upload_ratio", "uplink_bytes", "downlink_bytes", "seconds", "images_per_s", "seed", "correct")


def check_values(frame: "pd.DataFrame", name: str) -> None:
    """Every row complete, every number finite and in range, accuracy a fraction in [0, 1]."""
    import pandas as pd

    empty = frame[[c for c in REQUIRED_COLUMNS if c not in MAY_BE_EMPTY]].isna()
    if empty.any(axis=None):
        line, columns = _first_bad(empty)
        raise CemaError(f"{name} line {line} has no value for {', '.join(columns)} (a torn last line? the file was cut "
                        "while being written); delete that line or regenerate the file.")
    numbers = frame[["samples", "severity", "accuracy", *NON_NEGATIVE]].apply(pd.to_numeric, errors="coerce")
    _refuse(numbers.isna() | ~numbers.abs().lt(float("inf")), name, "is not a finite number", "regenerate the file with cema")
    _refuse(numbers[["samples", "correct", "severity"]] % 1 != 0, name, "is not a whole number", "regenerate the file with cema")
    _refuse(numbers[list(NON_NEGATIVE)] < 0, name, "is negative", "regenerate the file with cema")
    _refuse(numbers[["samples"]] < 1, name, "is not a positive count", "regenerate the file with cema")
    percent = numbers["accuracy"] > 1
    if percent.any():
        line = int(percent.to_numpy().argmax()) + 2
        raise CemaError(f"{name} line {line}: accuracy {numbers['accuracy'][percent].iloc[0]:g} is above 1; results.csv holds "
                        "fractions in [0, 1], and this looks like a percent: divide by 100, or regenerate the file with cema.")
    _refuse((numbers[["accuracy"]] < 0), name, "is negative", "regenerate the file with cema")
    _refuse(~numbers[["severity"]].isin(range(1, 6)), name, "is outside 1-5", "regenerate the file with cema")
    _refuse((numbers[["correct"]] > numbers[["samples"]].to_numpy()), name, "is more than the samples of that row",
            "regenerate the file with cema")


def _first_bad(mask: "pd.DataFrame") -> tuple[int, list[str]]:
    """(file line, bad columns) of the first row with a True cell; line 1 is the header."""
    position = int(mask.any(axis=1).to_numpy().argmax())
    return position + 2, [str(c) for c in mask.columns[mask.iloc[position].to_numpy()]]


def _refuse(mask: "pd.DataFrame", name: str, problem: str, fix: str) -> None:
    if mask.any(axis=None):
        line, columns = _first_bad(mask)
        raise CemaError(f"{name} line {line}: {', '.join(columns)} {problem}; {fix}.")
