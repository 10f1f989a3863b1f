"""A study of resumable cells on the terminal (``cema sweep``, and ``bench``/``compare`` with
--seeds or --executor, ``cema check``'s re-run of a grid): the counts of a dry run or a finished
run, the seed statistics, and the exit status of failed cells. The grid itself runs in
run/grid.py. No torch import.
"""

from __future__ import annotations

from typing import Any

from cema_cli.errors import CemaError


class CellsFailed(CemaError):
    """Some cells raised: their reasons are in run.json; the others' rows are kept. Exit 3."""

    exit_code = 3


def dry_run_text(result: Any) -> str:
    plan, todo = result.plan, result.cells - result.done_before - result.reused
    if result.eta_seconds is not None:
        eta = f"about {result.eta_seconds / 60:.1f} min with {plan.workers} {plan.executor} worker(s) (mean of the finished cells)"
    else:
        eta = "unknown until a cell has finished"
    shared = f" ({result.reused} reuse an edge-only run at another channel point)" if result.reused else ""
    return (f"{result.cells} cells{shared}, {result.done_before} already done, {todo} to run; "
            f"executor {plan.executor}, {plan.workers} worker(s) x {plan.threads} thread(s); time {eta}")


def print_cells_run(result: Any, console: Any) -> None:
    from rich.markup import escape

    reused = f", {result.reused} reused an edge-only run" if result.reused else ""
    console.print(f"{result.done_before} cells already done, {result.ran} run{reused}; results in [bold]{escape(str(result.out))}[/] "
                  "(results.csv, summary.csv, batches.csv, cells/, run.json)")


def print_statistics(frame: Any, versus: str | None, console: Any, metric: str = "accuracy") -> None:
    """The mean +- 95% tables (per method, per domain) and the paired comparison."""
    from cema_cli.results import tables as stats_tables

    console.print(stats_tables.seed_table(frame, metric))
    if frame[["corruption", "severity"]].drop_duplicates().shape[0] > 1:
        console.print(stats_tables.seed_domain_table(frame, metric))
    if versus:
        console.print(stats_tables.paired_table(frame, versus))


def fail_on_cells(failed: dict[str, str]) -> None:
    if failed:
        first = next(iter(failed.values()))
        raise CellsFailed(f"{len(failed)} cell(s) failed (first: {first}); their reasons are in run.json. "
                          "Fix the cause and rerun the same command: only the missing cells run.")
