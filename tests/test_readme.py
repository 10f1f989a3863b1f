"""Every command in README.md's code blocks runs (issue 22, item 7), so the README cannot drift
from the program. Run in order in one scratch folder (later commands read what earlier ones
wrote: `runs/a`, `study`), with small inputs: ``--samples 64`` (added where a run command has
none), two of the dataset's domains for ``--corruption all``. A command fails the test when it exits 2 (bad
input) or with an internal error, unless the README shows it failing: a ``# error: ...`` line
after it must match its output (the text before "..."), and ``echo $?  # N`` or a comment
``# refused (exit N)`` beside it its exit code.
Data-needing commands run on generated fixtures in the published layouts; the few that cannot
run here are skipped with the reason printed. The test prints how many commands it ran.

About 5 minutes on a 2-core machine: marked ``readme`` (``pytest -m "not readme"`` leaves it out
while iterating; CI runs it).
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cema_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "inputs"
SAMPLES = "64"
RUNS = ("bench", "compare", "sweep")
SKIP = [  # (pattern in the command, why it cannot run here)
    (r"--gpus-per-cell", "needs a GPU"),
    (r"^cema (?!sweep).* \.\.\.( |$)", "elided arguments (`...`)"),
    (r"--device cuda|--amp ", "needs CUDA"),
    (r"--dataset imagenet-c|--config examples/imagenet_c_\w+\.toml",
     "needs ImageNet-C and torchvision's ImageNet weights (tests/test_datasets_real.py runs bench on a generated ImageNet-C tree; "
     "tests/test_examples.py and tests/test_example_configs.py run the TOML files on generated ones)"),
    (r"--dataset cifar10-c(?!.*--edge-checkpoint)",
     "needs RobustBench's Standard.pt (WRN-28-10) weights (tests/test_example_configs.py runs them from a generated file)"),
    (r"^(pip|pytest)\b", "installs packages or runs the test suite (CI runs exactly that)"),
    (r"^python benchmarks/", "a benchmark, timed and run by hand"),
    (r"--tls-cert \S+\.pem", "needs a TLS certificate and key (tests/test_link.py serves TLS with generated ones)"),
]


@dataclass
class Command:
    words: list[str]
    line: int
    error: str | None = None  # a "# error: ..." line the README shows after it
    exit_code: int | None = None  # an "echo $?  # N" line after it
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def code_lines() -> list[tuple[int, str]]:
    """(line number, text) of every line inside a ``` block, continuation lines joined."""
    lines, inside, pending = [], False, None
    for number, raw in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if raw.startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        text = raw.strip()
        if pending is not None:
            text, number = pending[1] + " " + text, pending[0]
        if text.endswith("\\"):
            pending = (number, text[:-1].strip())
            continue
        pending = None
        lines.append((number, text))
    return lines


def readme_commands() -> list[Command]:
    """The commands (``cema``, ``pip``, ``pytest``, ``python``), split at ``&&``, with the
    expected error or exit code shown on the lines after them."""
    commands: list[Command] = []
    for number, text in code_lines():
        if text.startswith("# error:") and commands:
            commands[-1].error = text.removeprefix("#").strip()
        elif text.startswith("echo $?") and commands:
            commands[-1].exit_code = int(text.split("#")[1])
        elif re.match(r"(cema|pip|pytest|python) ", text + " "):
            refused = re.search(r"#.*\(exit (\d+)\)", text)  # "# refused (exit 2): ..." beside the command
            words = shlex.split(text, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(Command(words[:cut], number, exit_code=int(refused.group(1)) if refused else None))
                words = words[cut + 1 :]
    return commands


def skip_reason(command: Command) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, command.text)), None)


# --- fixtures in the published layouts, and small inputs ----------------------------------------

def prepare(folder: Path) -> dict[str, str]:
    """Files the README's commands name, made here; returns path substitutions."""
    result = CliRunner().invoke(app, ["compare", "--methods", "source,bn", "--samples", SAMPLES, "--out", str(folder / "base")])
    assert result.exit_code == 0, result.output
    for name in ("baseline.csv", "new.csv"):  # a baseline of this code, so `cema check` re-runs the same setting
        shutil.copy(folder / "base" / "results.csv", folder / name)
    for name, run in (("run-a", "compare-run"), ("run-b", "bench-run"), ("cema-runs/example", "compare-run")):
        (folder / name).mkdir(parents=True)
        shutil.copy(GOLDEN / run / "results.csv", folder / name / "results.csv")
    cifar = folder / "CIFAR-10-C"
    cifar.mkdir()
    rng = np.random.default_rng(0)
    np.save(cifar / "gaussian_noise.npy", rng.integers(0, 256, (5 * 64, 32, 32, 3), dtype=np.uint8))
    np.save(cifar / "labels.npy", np.tile(np.arange(10), 32))
    clean = folder / "clean"
    for label in ("a", "b"):
        (clean / label).mkdir(parents=True)
        for i in range(2):
            from PIL import Image

            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(clean / label / f"{i}.png")
    (folder / "cifar10").mkdir()  # `cema corrupt`'s .npy input, labels.npy beside it (its folder is not the output's)
    np.save(folder / "cifar10" / "cifar10_test.npy", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "cifar10" / "labels.npy", np.arange(4))
    (folder / "study.toml").write_text('[sweep]\nmethods = ["bn", "tent"]\nuplink_budgets = ["0", "unlimited"]\n')
    write_checkpoints(folder)
    return {"~/data/CIFAR-10-C-generated": "CIFAR-10-C-generated", "~/data/ImageNet-C-generated": "ImageNet-C-generated",
            "~/data/CIFAR-10-C": str(cifar), "~/data/imagenet/val": str(clean), "cema-runs/<run>": "cema-runs/example",
            "cifar10_test.npy": "cifar10/cifar10_test.npy", "examples/": f"{ROOT / 'examples'}/"}


def write_checkpoints(folder: Path) -> None:
    """r18_cifar.pt, r50_cifar.pt: random-init 10-class timm ResNets under the README's names."""
    import timm
    import torch

    torch.manual_seed(0)
    for name, arch in (("r18_cifar.pt", "resnet18"), ("r50_cifar.pt", "resnet50")):
        torch.save(timm.create_model(arch, pretrained=False, num_classes=10).state_dict(), folder / name)


def expand_elided(words: list[str], previous: list[str]) -> list[str]:
    """``cema sweep ... --dry-run``: the ``...`` stands for the last sweep's arguments (less its
    flags given again here)."""
    if "..." not in words:
        return words
    given = {w for w in words if w.startswith("--")}
    kept, skip = [], False
    for word in previous[2:]:
        if skip:
            skip = False
        elif word in given:
            skip = not word.startswith("--dry")  # drop the flag and its value
        else:
            kept.append(word)
    at = words.index("...")
    return words[:at] + kept + words[at + 1 :]


def small(command: Command, paths: dict[str, str]) -> list[str]:
    """The command as run here: fixture paths, --samples 64, two corruptions for 'all'."""
    words = [next((w.replace(k, v) for k, v in paths.items() if k in w), w) for w in command.words]
    if command.error or command.exit_code is not None:
        return words  # shown with its own output: run exactly as written
    two = "subject,gaussian_noise" if "watch" in words else "tweets,typos" if "sentiment" in words else "gaussian_noise,contrast"
    for flag in ("--corruption", "-c"):
        if flag in words and words[words.index(flag) + 1] == "all":
            words[words.index(flag) + 1] = two  # two of the dataset's own domains
            command.notes.append(f"--corruption all -> {two}")
    if words[1] in RUNS and "--resume" not in words and "--config" not in words:
        samples = "1000" if "--dirichlet" in words else SAMPLES  # MD's Dirichlet order needs 10 items per class chunk
        if "--samples" in words:
            words[words.index("--samples") + 1] = samples
        else:
            words += ["--samples", samples]
    return words


def failure(command: Command, exit_code: int, output: str) -> str | None:
    """Why this run does not match the README, or None."""
    flat = " ".join(output.split())
    if command.exit_code is not None and exit_code != command.exit_code:
        return f"exit {exit_code}, the README says {command.exit_code}"
    if command.error:
        expected = " ".join(command.error.split("...")[0].split())
        return None if expected in flat else f"the README shows {expected!r}"
    if "internal error" in flat or "Traceback" in output:
        return "an internal error"
    return f"exit 2: {flat[-300:]}" if exit_code == 2 and command.exit_code != 2 else None  # unless the README says exit 2


@pytest.mark.readme
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    paths = prepare(tmp_path)
    ran, skipped, failed, last_sweep = [], [], [], []
    for command in readme_commands():
        reason = skip_reason(command)
        if reason:
            skipped.append(f"README line {command.line}: {command.text} ({reason})")
            continue
        words = expand_elided(small(command, paths), last_sweep)
        if words[:2] == ["cema", "sweep"] and "--resume" not in words:
            last_sweep = words
        result = CliRunner().invoke(app, words[1:], catch_exceptions=True)
        output = result.output + (repr(result.exception) if result.exception and not isinstance(result.exception, SystemExit) else "")
        ran.append(command)
        why = failure(command, result.exit_code, output)
        if why:
            failed.append(f"README line {command.line}: {command.text}: {why}")
    with capsys.disabled():
        print(f"\nREADME commands: {len(ran)} run, {len(skipped)} skipped")
        for line in skipped:
            print(f"  skipped {line}")
    assert not failed, "\n".join(failed)
    assert len(ran) >= 40  # the parser found the README's commands
