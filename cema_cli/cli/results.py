"""``cema check``, ``cema report`` and ``cema plot``: commands on saved results.

No torch import at module level: ``cema report`` never imports it, and ``cema check`` only when
it re-runs the baseline's configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cema_cli.cli.cells import fail_on_cells, print_cells_run
from cema_cli.cli.common import console, default_out_dir, print_error, user_errors
from cema_cli.cli.options import check_metric
from cema_cli.errors import CemaError

if TYPE_CHECKING:
    import pandas as pd

REPORT_FORMATS = ("table", "csv", "markdown", "json")


def check_command(
    baseline: Annotated[Path, typer.Option(help="The results.csv to hold the line against (e.g. committed in your repository).")],
    tolerance: Annotated[float, typer.Option(help="Allowed accuracy drop per method and domain, in percentage points.")] = 0.5,
    results: Annotated[Optional[Path], typer.Option(help="Compare this results.csv instead of re-running the baseline's configuration.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Re-run the baseline's grid on these seeds (a count or a list) instead of its own.")] = None,
    executor: Annotated[Optional[str], typer.Option(help="Who runs a multi-seed re-run's cells: serial, process or ray (as cema sweep).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per cell of a multi-seed re-run (default: 1 per cell).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps (for the re-run).")] = "auto",
    data_root: Annotated[Optional[str], typer.Option(help="Root folder of an on-disk dataset (for the re-run).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder of the re-run (default: cema-runs/<time>-<methods>).")] = None,
    metric: Annotated[str, typer.Option(help="Show accuracy or error (%, 100 - accuracy) in the tables (top-5 beside it from 100 classes up).")] = "accuracy",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    """Exit 0 when every accuracy is within the tolerance or better, 1 on a regression, 2 on
    unusable input, 3 when the new results are not valid (a diverged or collapsed stream)."""
    from cema_cli.results import report
    from cema_cli.results.schema import read_results
    from cema_cli.results.saved import check_valid, compare_accuracy, fail_on_regression
    from cema_cli.results.tables import compare_seeds, is_multi_seed

    with user_errors(verbose):
        check_metric(metric)
        rerun_flags = [f"--{name}" for name, value in (("seeds", seeds), ("executor", executor), ("threads", threads)) if value is not None]
        if results and rerun_flags:
            raise CemaError(f"{' and '.join(rerun_flags)} only apply to a re-run of the baseline; drop them with --results.")
        if threads is not None and threads < 1:
            raise CemaError(f"--threads {threads} is not a positive count; give e.g. --threads 1.")
        from cema_cli.config import seed_list

        new_seeds = seed_list(seeds) if seeds is not None else None
        old = read_results(baseline)
        multi = is_multi_seed(old) or new_seeds is not None
        if results:
            new = read_results(results)
        elif multi:
            new = rerun_grid(old, new_seeds, device, data_root, out, executor, threads)
        else:
            new = rerun(old, device, data_root, out)
        diff = (compare_seeds if multi else compare_accuracy)(old, new, tolerance)
        console.print(report.check_table(diff, tolerance, metric))
        check_valid(new, f"{results}" if results else "the re-run")
        fail_on_regression(diff, tolerance)
        console.print(f"check passed: {len(diff)} rows against {baseline}; {report.check_rule(diff, tolerance)}", markup=False,
                      soft_wrap=True)


def rerun(baseline: "pd.DataFrame", device: str, data_root: Optional[str], out: Optional[Path]) -> "pd.DataFrame":
    """Run the configuration recorded in the baseline's rows; return the new results.csv."""
    from cema_cli.cli.progress import StudyDisplay
    from cema_cli.cli.studies import print_written
    from cema_cli.results.schema import read_results
    from cema_cli.results.saved import config_from_results
    from cema_cli.run.study import Study, run_study

    config = config_from_results(baseline, device, data_root)
    out = out or default_out_dir(list(config.methods))
    with StudyDisplay(console) as display:
        result = run_study(Study((config,)), out, events=display.events(), command=f"cema check (re-run of the baseline, {len(baseline)} rows)")
    print_written(result)
    return read_results(out / "results.csv")


def rerun_grid(baseline: "pd.DataFrame", seeds: Optional[list[int]], device: str, data_root: Optional[str], out: Optional[Path],
               executor: Optional[str], threads: Optional[int]) -> "pd.DataFrame":
    """Re-run a multi-seed baseline's grid (its methods, domains, samples, protocol, channel
    points and seeds, or ``seeds``) as a sweep with the current code; return the merged rows."""
    from cema_cli.cli.progress import StudyDisplay
    from cema_cli.results.run_folder import check_out_dir
    from cema_cli.results.saved import configs_from_results
    from cema_cli.run.study import Execution, Study, run_study

    study = Study(tuple(configs_from_results(baseline, seeds, device, data_root)), cells=True, execution=Execution(executor, threads))
    out = out or default_out_dir(["check", *study.configs[0].methods])
    check_out_dir(out, False)  # a fresh folder: a re-run never reuses cells of another code version
    with StudyDisplay(console) as display:
        result = run_study(study, out, events=display.events(), command=f"cema check (re-run of the baseline's grid, {len(baseline)} rows)")
    print_cells_run(result, console)
    fail_on_cells(result.failed)
    return result.rows


def report_command(
    files: Annotated[list[Path], typer.Argument(help="results.csv files (or run folders) to merge.", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv (tidy rows), markdown (the tables) or json (tidy rows).")] = "table",
    expected: Annotated[Optional[Path], typer.Option(help="A run configuration with [\\[expected]] published numbers (examples/*.toml): "  # rich markup, escaped
                                                     "print the measured ones beside them, with the difference.")] = None,
    metric: Annotated[str, typer.Option(help="Show accuracy or error (%, 100 - accuracy) in the tables (top-5 beside it from 100 classes up).")] = "accuracy",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    """Tables as in bench/compare; csv/markdown/json go to stdout, ready to paste. With
    --expected, the comparison with the published numbers (csv/json: its lines)."""
    from cema_cli.errors import unknown_name

    with user_errors(verbose):
        if format not in REPORT_FORMATS:
            raise unknown_name("format", format, REPORT_FORMATS)
        check_metric(metric)
        frame = merged_results(files)
        for path in files:
            note_unfinished(path)
        if expected is not None:
            print_expected(frame, expected, format)
        elif format == "table":
            for table in [*report_tables(frame, metric), *fleet_tables(files)]:
                console.print(table)
        else:
            typer.echo(report_text(frame, format, metric), nl=False)


def print_expected(frame: "pd.DataFrame", config: Path, format: str) -> None:
    """Measured beside published (cema_cli/results/expected.py), in the report's format."""
    from cema_cli.results import report
    from cema_cli.results.expected import comparison_frame, comparison_table
    from cema_cli.toml_config import read_expected

    comparison = comparison_frame(frame, read_expected(config))
    if comparison.empty:
        raise CemaError(f"the results hold none of the methods and domains {config} publishes numbers for; "
                        "run that configuration (cema compare --config ...) first.")
    if format == "table":
        console.print(comparison_table(comparison))
    elif format == "markdown":
        typer.echo(report.markdown_table(comparison_table(comparison)), nl=False)
    else:
        typer.echo(comparison.to_csv(index=False) if format == "csv" else comparison.to_json(orient="records", indent=2) + "\n", nl=False)


def note_unfinished(path: Path) -> None:
    """One ``note:`` line on stderr for a run that did not finish (or is still running)."""
    from cema_cli.results.run_folder import run_status

    folder = path if path.is_dir() else path.parent
    status, detail = run_status(folder)
    if status not in ("finished", "unknown", "complete") or (status == "complete" and detail):
        print_error(f"run {folder}: {status} ({detail}).", "note")


def merged_results(files: list[Path]) -> "pd.DataFrame":
    from cema_cli.results.schema import read_results
    from cema_cli.results.saved import merge_results, run_label

    return merge_results([(run_label(path), read_results(path)) for path in files])


def fleet_tables(files: list[Path]) -> list:
    """The fleet summary tables of every fleet folder given (its fleet.csv)."""
    import pandas as pd

    from cema_cli.results.fleet_tables import fleet_summary_table

    found = []
    for path in files:
        summary = (path if path.is_dir() else path.parent) / "fleet.csv"
        if summary.exists():
            found += fleet_summary_table(pd.read_csv(summary).to_dict("records"))
    return found


def report_tables(frame: "pd.DataFrame", metric: str = "accuracy") -> list:
    """The tables bench (one method) or compare (several; per domain when several domains) print,
    the mean ± 95% tables over seeds for multi-seed or multi-point sweeps, the sweep table when
    the rows hold several budget points, and a fleet's accuracy per edge (its rows keep their edge)."""
    from cema_cli.results.fleet_tables import edge_table, is_fleet

    return [*run_tables(frame, metric), *([edge_table(frame)] if is_fleet(frame) else [])]


def run_tables(frame: "pd.DataFrame", metric: str = "accuracy") -> list:
    from cema_cli.results import report, tables as stats_tables

    model_pairs = frame[["edge_model", "cloud_model"]].drop_duplicates().shape[0]
    if stats_tables.is_multi_seed(frame) or model_pairs > 1:  # mean ± 95% over seeds, per channel point and model pair
        domains = frame[["corruption", "severity"]].drop_duplicates().shape[0] > 1
        return [stats_tables.seed_table(frame, metric), *([stats_tables.seed_domain_table(frame, metric)] if domains else [])]
    sweep = [report.sweep_table(frame, metric)] if report.budget_points(frame) > 1 else []
    if frame["method"].nunique() == 1:
        return [report.bench_table(frame, metric), *sweep]
    several_domains = frame[["corruption", "severity"]].drop_duplicates().shape[0] > 1
    return [report.compare_table(frame, metric), *([report.domain_table(frame, metric)] if several_domains else []), *sweep]


def report_text(frame: "pd.DataFrame", format: str, metric: str = "accuracy") -> str:
    """csv and json: the merged tidy rows (schema versioned); markdown: the tables."""
    from cema_cli.results import report
    from cema_cli.results.schema import SCHEMA_VERSION

    if format == "csv":
        return frame.to_csv(index=False)
    if format == "json":
        rows = json.loads(frame.to_json(orient="records"))
        return json.dumps({"schema_version": SCHEMA_VERSION, "rows": rows}, indent=2) + "\n"
    return "\n".join(report.markdown_table(table) for table in report_tables(frame, metric))


def plot(
    results: Annotated[Path, typer.Argument(help="results.csv written by cema bench/compare/sweep, or its folder (batches.csv beside it is used too)")],
    output: Annotated[Path, typer.Option("--output", help="The file to write: .png, .pdf or .svg.")] = Path("plot.png"),
    split: Annotated[bool, typer.Option("--split", help="One file per panel: <stem>-<panel><suffix>.")] = False,
    metric: Annotated[str, typer.Option(help="Plot accuracy or error (%, 100 - accuracy).")] = "accuracy",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Accuracy against uploads, bytes and cloud cost, and along the stream, for any run kind."""
    with user_errors(verbose):
        from rich.markup import escape

        from cema_cli.results.plot import plot_results

        check_metric(metric)
        for path in plot_results(results, output, split, metric):
            console.print(f"plot written to [bold]{escape(str(path))}[/]")
