"""``cema corrupt``: materialise corrupted copies of a dataset (ImageNet-C / CIFAR-10-C layouts).

Registered in ``cli/app.py``. Heavy imports
(torch, the corruption library) happen inside the command so ``cema --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cema_cli.cli.common import user_errors
from cema_cli.errors import CemaError, unknown_name

_GROUPS = ("all", "common", "extra")


def parse_corruptions(text: str) -> list[str]:
    """"all", "common", "extra" or a comma-separated list of corruption names."""
    from cema_cli.corruptions import ALL, COMMON, EXTRA

    groups = {"all": ALL, "common": COMMON, "extra": EXTRA}
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        for name in groups.get(part, (part,)):
            if name not in ALL:
                raise unknown_name("corruption", name, (*ALL, *_GROUPS))
            if name not in names:
                names.append(name)
    if not names:
        raise CemaError("no corruption given; pass --corruption all, common, extra or names such as gaussian_noise,fog.")
    return names


def parse_severities(text: str) -> list[int]:
    """Comma-separated severities and ranges, e.g. "1,2,3" or "1-5"; each must be in 1-5."""
    values: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            low, _, high = part.partition("-")
            span = range(int(low), int(high or low) + 1)
        except ValueError:
            raise CemaError(f"cannot read severity {part!r}; pass integers 1-5 such as --severity 1,2,3,4,5.") from None
        if not span:
            raise CemaError(f"empty severity range {part!r}; write ranges low-high, e.g. --severity 1-5.")
        for value in span:
            if not 1 <= value <= 5:
                raise CemaError(f"severity {value} is outside 1-5; pass severities from 1 to 5 (e.g. --severity 1,3,5).")
            if value not in values:
                values.append(value)
    if not values:
        raise CemaError("no severity given; pass e.g. --severity 1,2,3,4,5.")
    return values


def corrupt_command(
    input: Path = typer.Option(..., "--input", "-i", help="Class-folder image tree (<class>/<file>) or an .npy array (N, H, W, 3) uint8 with labels.npy beside it."),
    output: Path = typer.Option(..., "--output", help="Output folder: <out>/<corruption>/<severity>/<class>/<file> for a tree, <out>/<corruption>.npy + labels.npy for an .npy."),
    corruption: str = typer.Option("all", "--corruption", "-c", help="all, common (15), extra (4), or comma-separated names, e.g. gaussian_noise,fog."),
    severity: str = typer.Option("1,2,3,4,5", "--severity", "-s", help="Comma-separated severities 1-5 (ranges like 1-5 work too)."),
    seed: int = typer.Option(0, "--seed", help="Seed; each image's randomness derives from (seed, corruption, severity, image index)."),
    jpeg_quality: Optional[int] = typer.Option(None, "--jpeg-quality", help="Write JPEG at this quality (the published ImageNet-C used 85). Default: keep each file's format (JPEG inputs at 85)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes; output is identical for any count."),
    constants: str = typer.Option("auto", "--constants", help="Corruption constants: auto (by image size: <=32 px cifar, else imagenet), imagenet or cifar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks."),
) -> None:
    """Write corrupted copies of a dataset in the ImageNet-C or CIFAR-10-C layout (resumable)."""
    with user_errors(verbose):
        names = parse_corruptions(corruption)
        severities = parse_severities(severity)
        if not input.exists():
            raise CemaError(f"input {input} does not exist; pass a class-folder image tree or an .npy file with --input.")
        write_copies(input, output, names, severities, seed=seed, jpeg_quality=jpeg_quality, workers=workers, constants=constants)


def write_copies(input: Path, output: Path, names: list[str], severities: list[int], **options: Any) -> None:
    """Materialise with a progress bar; report what was written, skipped and unreadable."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from cema_cli.corruptions.materialize import materialize

    console = Console(stderr=True, soft_wrap=True)
    with Progress(TextColumn("[bold]corrupting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("corrupt", total=None)
        summary = materialize(
            input, output, names, severities, **options,
            progress=lambda k: bar.advance(task, k),
            on_total=lambda n: bar.update(task, total=n),
        )
    console.print(
        f"{summary.layout}: wrote {summary.written} images, skipped {summary.skipped} existing, under {output} "
        f"({len(names)} corruptions x {len(severities)} severities; source: generated).", markup=False, highlight=False,
    )
    if summary.unreadable:
        first, why = next(iter(summary.unreadable.items()))
        console.print(f"skipped {len(summary.unreadable)} unreadable image(s), e.g. {first} ({why}); "
                      "they have no corrupted copy.", style="yellow", markup=False, highlight=False)
