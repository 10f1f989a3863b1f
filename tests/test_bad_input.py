"""Bad input, every command (issue 15): exit code 2, exactly one line on stderr that names the
problem and the fix, no traceback, and no run folder left behind. Then the faults: a second
writer, SIGTERM, SIGKILL in the middle of a compare.

Each case is (id, arguments built in tmp_path, the fragment the line must hold). The cases keep
covering the inputs that were already refused cleanly before issue 15.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cema_cli.cli import app
from cema_cli.results.run_folder import LOCK_NAME, run_status

GOLDEN = Path(__file__).parent / "golden" / "inputs"
RUN = GOLDEN / "compare-run" / "results.csv"  # source,bn x gaussian_noise-5, contrast-5
FAST = ("--samples", "64")
TINY_TIMM = ("--edge", "timm:resnet10t", "--random-init", "--input-size", "32", "--workers", "0", "--device", "cpu", "--batch-size", "4")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


# --- inputs -----------------------------------------------------------------------------------

def edited(tmp: Path, change, name: str = "edited.csv") -> str:
    """The golden run's results.csv, changed by ``change(frame)`` (written as pandas writes)."""
    path = tmp / name
    change(pd.read_csv(RUN)).to_csv(path, index=False)
    return str(path)


def with_cell(column: str, value) -> callable:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value
        return frame

    return change


def torn(tmp: Path, name: str = "torn.csv") -> str:
    """A results.csv cut in the middle of its last line, as a crash during a plain write leaves it."""
    text = RUN.read_text()
    path = tmp / name
    path.write_text(text[: text.rstrip("\n").rfind("\n") + 40])
    return str(path)


def run_folder(tmp: Path, batches: str | None = None) -> str:
    """A folder with the golden results.csv and, when given, this batches.csv text."""
    folder = tmp / "saved"
    folder.mkdir()
    (folder / "results.csv").write_text(RUN.read_text())
    if batches is not None:
        (folder / "batches.csv").write_text(batches)
    return str(folder)


def a_file(tmp: Path, name: str = "file.txt", data: bytes = b"x") -> str:
    (tmp / name).write_bytes(data)
    return str(tmp / name)


def non_empty(tmp: Path) -> str:
    (tmp / "run").mkdir()
    (tmp / "run" / "notes.txt").write_text("keep me")
    return str(tmp / "run")


def locked(tmp: Path) -> str:
    """A folder whose lock is held by a live process (this one)."""
    import socket

    (tmp / "run").mkdir()
    (tmp / "run" / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return str(tmp / "run")


def npy_input(tmp: Path, images: np.ndarray | bytes, labels: np.ndarray | bytes | None = None) -> str:
    folder = tmp / "npy"
    folder.mkdir(exist_ok=True)
    for name, data in (("images.npy", images), ("labels.npy", labels)):
        if isinstance(data, bytes):
            (folder / name).write_bytes(data)
        elif data is not None:
            np.save(folder / name, data)
    return str(folder / "images.npy")


def truncated_npy(tmp: Path) -> str:
    path = npy_input(tmp, np.zeros((10, 32, 32, 3), np.uint8), np.arange(10))
    Path(path).write_bytes(Path(path).read_bytes()[:2000])
    return path


def tree_without_images(tmp: Path) -> str:
    (tmp / "tree" / "a").mkdir(parents=True)
    (tmp / "tree" / "a" / "readme.txt").write_text("no images")
    return str(tmp / "tree")


def older_recipe_output(tmp: Path) -> str:
    """A corruption output folder whose record says another recipe made it."""
    (tmp / "old").mkdir()
    record = {"source": "generated", "layout": "imagenet-c", "seed": 0, "constants": "auto", "jpeg_quality": None,
              "recipe_version": 1}
    (tmp / "old" / "cema_corruption.json").write_text(json.dumps(record))
    return str(tmp / "old")


def broken_images_tree(tmp: Path) -> str:
    """A class tree whose two image files cannot be decoded."""
    (tmp / "broken" / "a").mkdir(parents=True)
    for name in ("0.png", "1.jpg"):
        (tmp / "broken" / "a" / name).write_bytes(b"\x89PNG not really")
    return str(tmp / "broken")


def int32_image_tree(tmp: Path) -> str:
    """A class tree holding one 32-bit integer TIFF (Pillow mode I): no fixed range to map to 8 bits."""
    (tmp / "wide" / "a").mkdir(parents=True)
    Image.fromarray(np.full((40, 40), 70000, np.int32)).save(tmp / "wide" / "a" / "0.tif")
    return str(tmp / "wide")


def toml(tmp: Path, text: str) -> str:
    return a_file(tmp, "run.toml", text.encode())


def images_tree(tmp: Path) -> str:
    from test_datasets_real import class_tree

    return str(class_tree(tmp / "tree"))


def cifar_c(tmp: Path) -> str:
    from test_datasets_real import cifar_c_files

    return str(cifar_c_files(tmp / "cc"))


def study(tmp: Path) -> str:
    """A finished study at tmp/run (bn, 64 samples, seeds 0 and 1, versus bn), copied from one made once."""
    if "study" not in STUDY:
        made = Path(tempfile.mkdtemp(prefix="cema-bad-input-")) / "study"
        atexit.register(shutil.rmtree, made.parent, True)
        result = invoke("sweep", "--methods", "bn", *FAST, "--seeds", "2", "--executor", "serial", "--threads", "1", "--out", str(made))
        assert result.exit_code == 0, result.output
        STUDY["study"] = made
    shutil.copytree(STUDY["study"], tmp / "run")
    return str(tmp / "run")


def torn_grid(tmp: Path) -> str:
    folder = Path(study(tmp))
    (folder / "grid.json").write_text((folder / "grid.json").read_text()[:80])
    return str(folder)


STUDY: dict[str, Path] = {}
OUT = ("--out", "{out}")


# issue 22 item 9 (crashes after the run folder existed, late or wrong refusals): fleets, DeYO's
# patches, link rates, SAR/DeYO options, Dirichlet, damaged results.csv, plot formats
FLEET_TWO_MODELS = """[fleet]
student = "shared"
[[fleet.edges]]
corruptions = ["gaussian_noise"]
[[fleet.edges]]
corruptions = ["contrast"]
edge = "mnist-foundation"
"""
FLEET_EMPTY_EDGE = """[fleet]
[[fleet.edges]]
corruptions = ["gaussian_noise"]
[[fleet.edges]]
corruptions = []
"""


def nul_bytes(tmp: Path) -> str:
    """The golden results.csv with 20 MB of NUL bytes inside (an error once echoed all of them)."""
    data = RUN.read_bytes()
    return a_file(tmp, "nul.csv", data[:300] + b"\x00" * 20_000_000 + data[300:])


ISSUE_22_HONEST = [
    ("fleet-shared-student-two-models", lambda t: ["compare", "--methods", "tent,bn", *FAST, "--config", toml(t, FLEET_TWO_MODELS), *OUT],
     "--student shared sends one cloud copy of the edge model to every edge, but edge 0 runs the dataset's default edge model and edge 1 runs mnist-foundation"),
    ("fleet-edge-without-corruptions", lambda t: ["compare", "--methods", "tent,bn", *FAST, "--config", toml(t, FLEET_EMPTY_EDGE), *OUT],
     "edge 1: its corruptions list is empty"),
    ("deyo-patch-len-above-the-image", lambda t: ["bench", "-m", "deyo", "-o", "deyo.patch_len=64", *FAST, *OUT],
     "-o deyo.patch_len=64: the stream's images are 32 px wide, too few for 64 patches per side; give at most 32"),
    ("uplink-rate-nan", lambda t: ["bench", "-m", "bn", "--uplink-budget", "nanMbit/s", "--frame-rate", "30", *OUT],
     "the link rate 'nanMbit/s' is not a finite rate"),
    ("uplink-rate-inf", lambda t: ["bench", "-m", "bn", "--uplink-budget", "infMbit/s", "--frame-rate", "30", *OUT],
     "the link rate 'infMbit/s' is not a finite rate"),
    ("sar-rho-inf", lambda t: ["bench", "-m", "sar", "-o", "sar.rho=inf", *OUT], "option sar.rho=inf is invalid: it must be finite"),
    ("sar-lr-inf", lambda t: ["bench", "-m", "sar", "-o", "sar.lr=inf", *OUT], "option sar.lr=inf is invalid: it must be finite"),
    ("deyo-lr-inf", lambda t: ["bench", "-m", "deyo", "-o", "deyo.lr=inf", *OUT], "option deyo.lr=inf is invalid: it must be finite"),
    ("dirichlet-1e-300-no-warning", lambda t: ["bench", "-m", "bn", "--protocol", "correlated", "--dirichlet", "1e-300", "--samples", "256", *OUT],
     "no Dirichlet label order with delta 1e-300"),
    ("report-nul-bytes", lambda t: ["report", nul_bytes(t)], "holds NUL bytes (the first at byte 300)"),
    ("report-correct-above-samples", lambda t: ["report", edited(t, lambda f: f.assign(correct=f["samples"] + 1))],
     "line 2: correct is more than the samples of that row"),
    ("report-severity-7", lambda t: ["report", edited(t, with_cell("severity", 7))], "line 2: severity is outside 1-5"),
    ("plot-output-xyz", lambda t: ["plot", str(RUN), "--output", str(t / "p.xyz")], "cannot write .xyz; end the name with .png, .pdf, .svg"),
]

CASES = [
    # item 2: cema check and --min-accuracy
    ("check-blank-accuracy", lambda t: ["check", "--baseline", edited(t, with_cell("accuracy", None)), "--results", str(RUN)], "no value for accuracy"),
    ("check-nan-accuracy", lambda t: ["check", "--baseline", str(RUN), "--results", edited(t, with_cell("accuracy", float("nan")))], "no value for accuracy"),
    ("check-percent-accuracy", lambda t: ["check", "--baseline", str(RUN), "--results", edited(t, lambda f: f.assign(accuracy=100 * f["accuracy"]))], "looks like a percent"),
    ("check-negative-accuracy", lambda t: ["check", "--baseline", edited(t, with_cell("accuracy", -0.1)), "--results", str(RUN)], "accuracy is negative"),
    ("check-text-accuracy", lambda t: ["check", "--baseline", edited(t, with_cell("accuracy", "high")), "--results", str(RUN)], "accuracy is not a finite number"),
    ("check-tolerance-nan", lambda t: ["check", "--baseline", str(RUN), "--results", str(RUN), "--tolerance", "nan"], "--tolerance nan is not an allowed drop"),
    ("check-tolerance-negative", lambda t: ["check", "--baseline", str(RUN), "--results", str(RUN), "--tolerance", "-1"], "--tolerance -1 is not an allowed drop"),
    ("check-tolerance-inf", lambda t: ["check", "--baseline", str(RUN), "--results", str(RUN), "--tolerance", "inf"], "--tolerance inf is not an allowed drop"),
    ("check-missing-baseline", lambda t: ["check", "--baseline", str(t / "nope.csv"), "--results", str(RUN)], "no such file"),
    ("min-accuracy-fraction", lambda t: ["bench", "--min-accuracy", "0.9", *OUT], "is ambiguous: it is in percent"),
    ("min-accuracy-150", lambda t: ["bench", "--min-accuracy", "150", *OUT], "is not a percentage"),
    ("min-accuracy-nan", lambda t: ["bench", "--min-accuracy", "nan", *OUT], "is not a percentage"),
    # items 3 and 8: saved results read by plot and report
    ("plot-torn-line", lambda t: ["plot", torn(t)], "torn last line"),
    ("plot-percent", lambda t: ["plot", edited(t, lambda f: f.assign(accuracy=100 * f["accuracy"]))], "looks like a percent"),
    ("plot-foreign-csv", lambda t: ["plot", a_file(t, "other.csv", b"model,top1\nresnet,0.7\n")], "no schema_version column"),
    ("plot-torn-batches", lambda t: ["plot", run_folder(t, "schema_version,method,batch,seen,correct\n1,bn,1,64,60\n1,bn,2,")], "torn last line"),
    ("plot-foreign-batches", lambda t: ["plot", run_folder(t, "a,b\n1,2\n")], "lacks the column(s) method"),
    ("plot-short-o", lambda t: ["plot", str(RUN), "-o", str(t / "p.png")], "here write --output"),
    ("plot-missing-file", lambda t: ["plot", str(t / "nope.csv")], "no such file"),
    ("report-torn-line", lambda t: ["report", torn(t)], "torn last line"),
    ("report-percent", lambda t: ["report", edited(t, lambda f: f.assign(accuracy=100 * f["accuracy"]))], "looks like a percent"),
    ("report-text-samples", lambda t: ["report", edited(t, with_cell("samples", "many"))], "samples is not a finite number"),
    ("report-fractional-samples", lambda t: ["report", edited(t, with_cell("samples", 2.5))], "samples is not a whole number"),
    ("report-binary-file", lambda t: ["report", a_file(t, "bin.csv", bytes(range(256)))], "not a readable CSV"),
    ("report-unknown-format", lambda t: ["report", str(RUN), "--format", "xlsx"], "unknown format 'xlsx'"),
    ("report-missing-file", lambda t: ["report", str(t / "nope.csv")], "no such file"),
    # item 5: run folders
    ("out-is-a-file", lambda t: ["bench", *FAST, "--out", a_file(t)], "is a file; give a folder"),
    ("out-holds-files", lambda t: ["bench", *FAST, "--out", non_empty(t)], "add --force"),
    ("out-locked", lambda t: ["bench", *FAST, "--out", locked(t)], f"another cema run (pid {os.getpid()}"),
    ("out-locked-force", lambda t: ["bench", *FAST, "--force", "--out", locked(t)], f"another cema run (pid {os.getpid()}"),
    ("late-missing-cloud", lambda t: ["compare", "--methods", "bn,cema", "--dataset", "cifar10-c", "--data-root", cifar_c(t), *TINY_TIMM, *OUT], "pass --cloud"),
    ("late-truncated-npy-dataset", lambda t: ["bench", "-m", "bn", "--dataset", "npy", "--data-root", str(Path(truncated_npy(t)).parent), *TINY_TIMM, *OUT], "is it truncated?"),
    ("late-garbage-checkpoint", lambda t: ["bench", "-m", "bn", *FAST, "--edge-checkpoint", a_file(t, "w.pt", bytes(range(256))), *OUT], "cannot read checkpoint"),
    ("late-missing-data-root", lambda t: ["bench", "-m", "bn", "--dataset", "cifar10-c", "--data-root", str(t / "nope"), *TINY_TIMM, *OUT], "is not a folder"),
    # item 6: cema corrupt
    ("corrupt-missing-input", lambda t: ["corrupt", "--input", str(t / "nope"), "--output", str(t / "c")], "does not exist"),
    ("corrupt-unknown-corruption", lambda t: ["corrupt", "--input", str(t), "--output", str(t / "c"), "-c", "fgo"], "unknown corruption 'fgo'"),
    ("corrupt-severity-9", lambda t: ["corrupt", "--input", str(t), "--output", str(t / "c"), "-s", "9"], "severity 9 is outside 1-5"),
    ("corrupt-severity-text", lambda t: ["corrupt", "--input", str(t), "--output", str(t / "c"), "-s", "high"], "cannot read severity 'high'"),
    ("corrupt-jpeg-quality-0", lambda t: ["corrupt", "--input", tree_without_images(t), "--output", str(t / "c"), "--jpeg-quality", "0"], "JPEG quality 0 is outside 1-100"),
    ("corrupt-workers-0", lambda t: ["corrupt", "--input", tree_without_images(t), "--output", str(t / "c"), "--workers", "0"], "workers must be at least 1"),
    ("corrupt-unknown-constants", lambda t: ["corrupt", "--input", tree_without_images(t), "--output", str(t / "c"), "--constants", "mnist"], "unknown constants set 'mnist'"),
    ("corrupt-output-is-a-file", lambda t: ["corrupt", "--input", tree_without_images(t), "--output", a_file(t)], "is a file; give a folder"),
    ("corrupt-other-recipe", lambda t: ["corrupt", "--input", tree_without_images(t), "--output", older_recipe_output(t)], "recipe_version 1 there"),
    ("corrupt-no-images", lambda t: ["corrupt", "--input", tree_without_images(t), "--output", str(t / "c")], "no images found"),
    ("corrupt-truncated-npy", lambda t: ["corrupt", "--input", truncated_npy(t), "--output", str(t / "c"), "-c", "fog", "-s", "1"], "cannot read"),
    ("corrupt-float-npy", lambda t: ["corrupt", "--input", npy_input(t, np.zeros((2, 8, 8, 3), np.float32), np.arange(2)), "--output", str(t / "c")], "needs uint8 images"),
    ("corrupt-no-labels", lambda t: ["corrupt", "--input", npy_input(t, np.zeros((2, 8, 8, 3), np.uint8)), "--output", str(t / "c")], "no labels.npy beside"),
    ("corrupt-garbage-labels", lambda t: ["corrupt", "--input", npy_input(t, np.zeros((2, 8, 8, 3), np.uint8), b"garbage"), "--output", str(t / "c")], "cannot read"),
    ("corrupt-not-npy-file", lambda t: ["corrupt", "--input", a_file(t), "--output", str(t / "c")], "not an .npy array"),
    ("corrupt-short-o", lambda t: ["corrupt", "--input", str(t), "-o", str(t / "c")], "here write --output"),
    # issue 22 item 9: cema corrupt
    ("corrupt-output-is-input", lambda t: ["corrupt", "--input", images_tree(t), "--output", str(t / "tree")], "is the input folder"),
    ("corrupt-output-in-input", lambda t: ["corrupt", "--input", images_tree(t), "--output", str(t / "tree" / "c")], "is inside the input folder"),
    ("corrupt-output-is-npy-folder", lambda t: ["corrupt", "--input", npy_input(t, np.zeros((2, 8, 8, 3), np.uint8), np.arange(2)),
                                               "--output", str(t / "npy")], "is the input folder"),
    ("corrupt-no-readable-image", lambda t: ["corrupt", "--input", broken_images_tree(t), "--output", "{out}"], "none of the 2 images"),
    ("corrupt-only-32-bit-images", lambda t: ["corrupt", "--input", int32_image_tree(t), "--output", "{out}"], "have no fixed range"),
    ("corrupt-seed-negative", lambda t: ["corrupt", "--input", images_tree(t), "--output", "{out}", "--seed", "-1"], "seed -1 is outside 0 to 2**63-1"),
    ("corrupt-seed-2-63", lambda t: ["corrupt", "--input", images_tree(t), "--output", "{out}", "--seed", str(2**63)], "is outside 0 to 2**63-1"),
    ("corrupt-npy-one-severity", lambda t: ["corrupt", "--input", npy_input(t, np.zeros((2, 8, 8, 3), np.uint8), np.arange(2)),
                                           "--output", "{out}", "-s", "5"], "stacks all 5 severities"),
    # item 7: every bad flag of a run, one line
    ("config-binary", lambda t: ["bench", "--config", a_file(t, "bin.toml", b"\x00\x01\xff\xfe"), *OUT], "is not text"),
    ("config-folder", lambda t: ["bench", "--config", str(t), *OUT], "is a folder"),
    ("config-missing", lambda t: ["bench", "--config", str(t / "nope.toml"), *OUT], "does not exist"),
    ("config-invalid-toml", lambda t: ["bench", "--config", toml(t, "samples = = 3\n"), *OUT], "is not valid TOML"),
    ("config-unknown-key", lambda t: ["bench", "--config", toml(t, "sample = 5\n"), *OUT], "unknown key(s) sample"),
    ("config-seed-text", lambda t: ["bench", "--config", toml(t, 'seed = "x"\n'), *OUT], "seed = 'x' is not of type int"),
    ("config-samples-text", lambda t: ["bench", "--config", toml(t, 'samples = "many"\n'), *OUT], "samples = 'many' is not of type int | None"),
    ("config-batch-size-float", lambda t: ["bench", "--config", toml(t, "batch_size = 1.5\n"), *OUT], "batch_size = 1.5 is not of type int"),
    ("config-corruptions-string", lambda t: ["bench", "--config", toml(t, 'corruptions = "fog"\n'), *OUT], "is not of type tuple[str, ...]"),
    ("config-budget-text", lambda t: ["bench", "--config", toml(t, '[channel]\nuplink_budget_bytes = "lots"\n'), *OUT], "[channel] uplink_budget_bytes = 'lots'"),
    ("config-channel-not-a-table", lambda t: ["bench", "--config", toml(t, "channel = 3\n"), *OUT], "channel must be a table"),
    ("frame-rate-nan", lambda t: ["bench", "--uplink-budget", "8Mbit/s", "--frame-rate", "nan", *OUT], "needs the stream's frame rate"),
    ("frame-rate-inf", lambda t: ["bench", "--uplink-budget", "8Mbit/s", "--frame-rate", "inf", *OUT], "needs the stream's frame rate"),
    ("rate-without-frame-rate", lambda t: ["bench", "--uplink-budget", "8Mbit/s", *OUT], "add e.g. --frame-rate 30"),
    ("seed-2-to-80", lambda t: ["bench", "--seed", str(2**80), *OUT], "is outside 0 to 2**63-1"),
    ("seed-negative", lambda t: ["bench", "--seed", "-1", *OUT], "is outside 0 to 2**63-1"),
    ("seed-text", lambda t: ["bench", "--seed", "abc", *OUT], "Invalid value for '--seed'"),
    ("markup-corruption", lambda t: ["bench", "--corruption", "[/x]", *OUT], "unknown corruption '[/x]'"),
    ("markup-option", lambda t: ["bench", "-m", "tent", "--option", "tent.lr=[/x]", *OUT], "tent.lr='[/x]' is not a float"),
    ("empty-corruption", lambda t: ["bench", "--corruption", ",", *OUT], "--corruption is empty"),
    ("severity-9", lambda t: ["bench", "--severity", "9", *OUT], "severity 9 is outside 1-5"),
    ("severity-text", lambda t: ["bench", "--severity", "x", *OUT], "is not a number or list"),
    ("samples-0", lambda t: ["bench", "--samples", "0", *OUT], "--samples 0 must be a positive count"),
    ("batch-size-1", lambda t: ["bench", "--batch-size", "1", *OUT], "--batch-size 1: cema would normalise one sample"),
    ("batch-size-0", lambda t: ["bench", "--batch-size", "0", *OUT], "--batch-size 0 must be at least 1"),
    ("budget-text", lambda t: ["bench", "--uplink-budget", "lots", *OUT], "cannot read 'lots' as a byte count"),
    ("budget-negative", lambda t: ["bench", "--uplink-budget", "-5", *OUT], "cannot read '-5' as a byte count"),
    ("device-tpu", lambda t: ["bench", "--device", "tpu", *OUT], "unknown device 'tpu'"),
    ("protocol-typo", lambda t: ["bench", "--protocol", "continuous", *OUT], "unknown protocol 'continuous'"),
    ("method-typo", lambda t: ["bench", "-m", "tnet", *OUT], "Did you mean 'tent'"),
    ("methods-empty", lambda t: ["compare", "--methods", ",", *OUT], "no method given"),
    ("dataset-typo", lambda t: ["bench", "--dataset", "mnsit", *OUT], "unknown dataset 'mnsit'"),
    ("option-without-value", lambda t: ["bench", "-m", "tent", "--option", "tent.lr", *OUT], "is not METHOD.NAME=VALUE"),
    ("option-unknown-name", lambda t: ["bench", "-m", "tent", "--option", "tent.nope=1", *OUT], "has no option nope"),
    ("option-for-a-method-not-run", lambda t: ["bench", "-m", "tent", "--option", "bn.prior=1", *OUT], "'bn' is not run"),
    ("checkpoint-missing", lambda t: ["bench", "--edge-checkpoint", str(t / "nope.pt"), *OUT], "no such file"),
    ("random-init-and-checkpoint", lambda t: ["bench", "--random-init", "--edge-checkpoint", a_file(t, "w.pt"), *OUT], "contradict each other"),
    ("amp-fp8", lambda t: ["bench", "--amp", "fp8", *OUT], "unknown --amp dtype 'fp8'"),
    ("input-size-2", lambda t: ["bench", "--input-size", "2", *OUT], "--input-size 2 is too small"),
    ("workers-negative", lambda t: ["bench", "--workers", "-1", *OUT], "--workers -1 must be 0"),
    ("unknown-flag", lambda t: ["bench", "--nope", *OUT], "No such option: --nope"),
    ("flag-given-a-value", lambda t: ["bench", "--random-init", "yes", *OUT], "unexpected extra argument"),
    ("list-typo", lambda t: ["list", "method"], "Did you mean 'methods'"),
    # issue 22 item 9: sweeps, resumes, TOML files, seeds and --out (each refused before anything runs)
    ("sweep-out-unrelated-files", lambda t: ["sweep", "--methods", "bn", *FAST, "--out", non_empty(t)], "holds files that are not a cema study"),
    ("sweep-out-locked", lambda t: ["sweep", "--methods", "bn", *FAST, "--out", locked(t)], f"another cema run (pid {os.getpid()}"),
    ("severity-empty", lambda t: ["bench", "--severity", "", *OUT], "--severity '' is empty"),
    ("config-corruptions-empty", lambda t: ["bench", "--config", toml(t, "corruptions = []\n"), *OUT], "corruptions = [] lists nothing"),
    ("config-sweep-not-a-table", lambda t: ["sweep", "--config", toml(t, "sweep = 5\n"), *OUT], "sweep must be a table"),
    ("config-sweep-seeds-text", lambda t: ["sweep", "--config", toml(t, "[sweep]\nseeds = 'abc'\n"), *OUT], "is not a count or a list"),
    ("config-sweep-budget-float", lambda t: ["sweep", "--config", toml(t, "[sweep]\nuplink_budgets = [1.5]\n"), *OUT],
     "uplink_budgets = [1.5] is not of type"),
    ("config-budget-in-two-places", lambda t: ["sweep", "--config", toml(t, "[sweep]\nuplink_budgets = ['0']\n[channel]\nuplink_budget_bytes = 5\n"), *OUT],
     "both set the uplink_budgets; give them in one place"),
    ("config-seed-in-two-places", lambda t: ["sweep", "--config", toml(t, "seed = 3\n[sweep]\nseeds = 2\n"), *OUT], "[sweep] seeds and seed both"),
    ("config-table-of-a-method-not-listed", lambda t: ["sweep", "--config", toml(t, "[sweep]\nmethods = ['bn']\n[methods.tent]\nlr = 0.001\n"), *OUT],
     "[methods.tent] gives options for tent"),
    ("config-methods-list-and-tables", lambda t: ["compare", "--config", toml(t, "methods = ['bn']\n[methods.tent]\n"), *OUT], "cannot both be given"),
    ("config-methods-empty", lambda t: ["compare", "--config", toml(t, "methods = []\n"), *OUT], "must list method names"),
    ("seeds-count-2-to-64", lambda t: ["sweep", "--methods", "bn", *FAST, "--seeds", str(2**64), *OUT], "more than 1000 seeds as a count"),
    ("seeds-count-in-compare", lambda t: ["compare", "--methods", "bn", *FAST, "--seeds", str(2**64), *OUT], "more than 1000 seeds as a count"),
    ("seeds-list-out-of-range", lambda t: ["sweep", "--methods", "bn", *FAST, "--seeds", f"0,{2**63}", *OUT], "is outside 0 to 2**63-1"),
    ("seed-and-seeds", lambda t: ["compare", "--methods", "bn", *FAST, "--seed", "3", "--seeds", "2", *OUT], "--seed and --seeds both"),
    ("sweep-threads-negative", lambda t: ["sweep", "--methods", "source,bn", *FAST, "--threads", "-1", *OUT], "--threads -1 must be at least 1"),
    ("sweep-threads-0", lambda t: ["sweep", "--methods", "source,bn", *FAST, "--threads", "0", *OUT], "--threads 0 must be at least 1"),
    ("sweep-versus-typo", lambda t: ["sweep", "--methods", "source,bn", *FAST, "--versus", "tnet", *OUT], "--versus tnet is not a method"),
    ("sweep-bad-option-before-any-cell", lambda t: ["sweep", "--methods", "bn,eata", *FAST, "-o", "eata.fisher_beta=abc", *OUT], "fisher_beta"),
    ("edges-10000", lambda t: ["compare", "--methods", "bn", *FAST, "--edges", "10000", *OUT], "at most 256 edges"),
    ("out-empty", lambda t: ["bench", *FAST, "--out", ""], "--out '' names no folder"),
    ("sweep-out-empty", lambda t: ["sweep", "--methods", "bn", *FAST, "--out", ""], "--out '' names no folder"),
    ("resume-empty", lambda t: ["sweep", "--resume", ""], "--resume '' names no folder"),
    ("resume-not-a-study", lambda t: ["sweep", "--resume", non_empty(t)], "no study there"),
    ("resume-and-force", lambda t: ["sweep", "--resume", study(t), "--force"], "give one of them"),
    ("resume-other-samples", lambda t: ["sweep", "--resume", study(t), "--samples", "128", "--dry-run"], "samples 128 (the study: 64)"),
    ("resume-other-option", lambda t: ["sweep", "--resume", study(t), "-o", "bn.prior=8"], "options of bn {'prior': '8'} (the study: {})"),
    ("resume-other-models", lambda t: ["sweep", "--resume", study(t), "--edge", "timm:resnet10t"], "models timm:resnet10t/default"),
    ("rerun-into-study-other-samples", lambda t: ["sweep", "--methods", "bn", "--samples", "128", "--out", study(t)], "samples 128 (the study: 64)"),
    ("resume-versus-typo", lambda t: ["sweep", "--resume", study(t), "--versus", "tnet"], "--versus tnet is not a method of the study (bn)"),
    ("resume-torn-grid", lambda t: ["sweep", "--resume", torn_grid(t)], "grid.json is not valid JSON"),
    ("link-typo", lambda t: ["bench", "--link", "real", *OUT], "unknown --link 'real'"),
    ("cloud-url-without-port", lambda t: ["bench", "--link", "live", "--cloud-url", "cloudhost", *OUT], "is not HOST:PORT"),
    ("cloud-url-without-live", lambda t: ["bench", "--cloud-url", "h:1", *OUT], "add --link live"),
    ("shape-without-live", lambda t: ["bench", "--shape", "2Mbit", *OUT], "add --link live"),
    ("shape-not-a-rate", lambda t: ["bench", "--link", "live", "--shape", "fast", *OUT], "--shape 'fast' is not a link rate"),
    ("realtime-without-frame-rate", lambda t: ["bench", "--link", "live", "--timing", "realtime", *OUT], "give --frame-rate"),
    ("realtime-with-simulated-delay", lambda t: ["bench", "--link", "live", "--timing", "realtime", "--frame-rate", "64",
                                                 "--downlink-delay", "2", *OUT], "--downlink-delay simulate the link's timing"),
    ("live-with-seeds", lambda t: ["bench", "--link", "live", "--seeds", "2", *OUT], "a live link runs one study at a time"),
    ("live-fleet-pooled", lambda t: ["bench", "--link", "live", "--edges", "2", "--cloud-batching", "pooled", *OUT], "one student per edge"),
    ("tls-cert-without-key", lambda t: ["bench", "--link", "live", "--tls-cert", a_file(t, "c.pem"), *OUT], "go together"),
    ("serve-scheduler-typo", lambda t: ["serve", "--scheduler", "lifo", "--port", "0"], "unknown --scheduler 'lifo'"),
    ("serve-bad-certificate", lambda t: ["serve", "--tls-cert", a_file(t, "c.pem"), "--tls-key", a_file(t, "k.pem"), "--port", "0"],
     "cannot load them"),
    ("eata-without-clean-set", lambda t: ["compare", "--methods", "bn,eata", "--dataset", "folder", "--data-root", images_tree(t),
                                          "--edge", "torchvision:resnet18", "--cloud", "torchvision:resnet18", "--random-init",
                                          "--input-size", "32", *OUT], "needs clean in-distribution images"),
    *ISSUE_22_HONEST,
    # issue 25: sensor windows and sentences
    ("watch-unknown-domain", lambda t: ["bench", "--dataset", "watch", "--corruption", "snow", *OUT], "unknown watch domain 'snow'"),
    ("watch-jpeg-uplink", lambda t: ["bench", "--dataset", "watch", "-c", "subject", "--uplink-encoding", "jpeg", *FAST, *OUT],
     "uploads int16 sensor windows, which travel as int16 or float32"),
    ("watch-constants", lambda t: ["bench", "--dataset", "watch", "-c", "subject", "--constants", "cifar", *OUT], "has its own shifts"),
    ("watch-input-size", lambda t: ["bench", "--dataset", "watch", "-c", "subject", "--input-size", "64", *OUT], "apply to image models"),
    ("watch-image-augmentations", lambda t: ["compare", "--methods", "source,cotta,deyo", "--dataset", "watch", "-c", "subject", *OUT],
     "cotta averages its teacher's predictions over image augmentations"),
    ("sentiment-unknown-domain", lambda t: ["bench", "--dataset", "sentiment", "-c", "tweet", *OUT], "Did you mean 'tweets'"),
    ("sentiment-batchnorm-method", lambda t: ["compare", "--methods", "source,bn,tent", "--dataset", "sentiment", "-c", "tweets", *OUT],
     "bn only re-estimates BatchNorm statistics and the edge model has no BatchNorm. Drop it: run --methods source,tent"),
    ("prepare-unknown-dataset", lambda t: ["prepare", "--dataset", "imagenet"], "unknown dataset to prepare 'imagenet'"),
]


@pytest.mark.parametrize(("make", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_no_folder(tmp_path, make, expected):
    args = [arg.replace("{out}", str(tmp_path / "out")) for arg in make(tmp_path)]
    before = sorted(p.name for p in (tmp_path / "run").iterdir()) if (tmp_path / "run").is_dir() else None
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr  # one line, even past 80 columns
    assert expected in result.stderr and len(result.stderr) < 1000  # one short line: no echoed file or warning
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # validated before anything was created, or cleaned up
    if before is not None:  # an existing folder is left as it was
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_a_tiny_dirichlet_prints_its_error_and_no_numpy_warning(tmp_path):
    """Run as a user would (pytest swallows warnings): stderr is the one error line, nothing before it."""
    code = "from cema_cli.cli import main; main()"
    args = ["bench", "-m", "bn", "--protocol", "correlated", "--dirichlet", "1e-300", "--samples", "256", "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: no Dirichlet label order with delta 1e-300")


@pytest.fixture
def package_cache(tmp_path, monkeypatch):
    """An empty cema cache; the package-file datasets forget what they read before and after."""
    from cema_cli.data import sentiment, watch

    def forget() -> None:
        for cached in (watch.recordings, watch.split, watch.channel_std, sentiment.rated_sentences, sentiment.movie_split, sentiment.split):
            cached.cache_clear()

    monkeypatch.setenv("CEMA_CACHE", str(tmp_path / "cache"))
    forget()
    yield tmp_path / "cache"
    forget()


def garbage_at(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 not a zip archive")


PACKAGE_FILE_CASES = [
    ("watch-package-file-missing", "watch", lambda cache, patch: patch("PACKAGE_FILE", "data/moved.npy"), "ships in seglearn's wheel, but"),
    ("watch-corrupt-cache", "watch", lambda cache, patch: garbage_at(cache / "data" / "watch-eb122f23cdf0.npz"), "the watch cache"),
    ("sentiment-archive-missing", "sentiment", lambda cache, patch: None, "run `cema prepare` once"),
    ("sentiment-archive-altered", "sentiment", lambda cache, patch: garbage_at(cache / "packages" / "vaderSentiment-3.3.2.tar.gz"), "sha256 differs"),
]


@pytest.mark.parametrize(("dataset", "make", "expected"), [c[1:] for c in PACKAGE_FILE_CASES], ids=[c[0] for c in PACKAGE_FILE_CASES])
def test_package_file_problems_are_one_line_exit_2(package_cache, monkeypatch, tmp_path, dataset, make, expected):
    from cema_cli.data import watch

    make(package_cache, lambda name, value: monkeypatch.setattr(watch, name, value))
    domain = {"watch": "subject", "sentiment": "tweets"}[dataset]
    result = invoke("bench", "-m", "source", "--dataset", dataset, "-c", domain, *FAST, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_there_are_many_bad_inputs():
    assert len(CASES) >= 126 and len({case[0] for case in CASES}) == len(CASES)


# --- what used to be refused or wrong and now works ----------------------------------------------

def test_a_percent_minimum_and_a_fraction_in_the_file_agree(tmp_path):
    result = invoke("bench", "-m", "bn", *FAST, "--min-accuracy", "99", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "below --min-accuracy 99%: bn" in result.stderr


def test_repeated_domains_and_methods_run_once_and_report_reads_them(tmp_path):
    out = tmp_path / "run"
    result = invoke("compare", "--methods", "bn,bn,source", "--severity", "5,5", "-c", "fog,fog", *FAST, "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert list(zip(frame["method"], frame["corruption"], frame["severity"])) == [("bn", "fog", 5), ("source", "fog", 5)]
    assert invoke("report", str(out)).exit_code == 0


def test_report_and_check_read_a_budget_sweep(tmp_path):
    out = tmp_path / "sweep"
    assert invoke("compare", "--methods", "source,bn", *FAST, "--uplink-budget", "0,unlimited", "--out", str(out)).exit_code == 0
    report = invoke("report", str(out))
    assert report.exit_code == 0, report.output
    assert "each mean pools 2 uplink budget points" in " ".join(report.stdout.split()) and "Pareto-best" in report.stdout
    check = invoke("check", "--baseline", str(out), "--results", str(out))
    assert check.exit_code == 0 and "4 rows against" in check.stdout


def test_edge_only_methods_need_no_cloud_model(tmp_path):
    out = tmp_path / "run"
    result = invoke("compare", "--methods", "source,bn", "--dataset", "cifar10-c", "--data-root", cifar_c(tmp_path), *TINY_TIMM,
                    "-o", "bn.prior=0", "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["method"]) == ["source", "bn"] and frame["cloud_model"].isna().all() and set(frame["cloud_weights"]) == {"none"}


def test_version():
    from cema_cli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"cema {__version__}\n"


def test_force_replaces_the_run_files(tmp_path):
    out = tmp_path / "run"
    assert invoke("bench", "-m", "source", *FAST, "--out", str(out)).exit_code == 0
    assert invoke("bench", "-m", "bn", *FAST, "--out", str(out)).exit_code == 2  # refused: the source run is kept
    assert list(pd.read_csv(out / "results.csv")["method"]) == ["source"]
    assert invoke("bench", "-m", "bn", *FAST, "--force", "--out", str(out)).exit_code == 0
    assert list(pd.read_csv(out / "results.csv")["method"]) == ["bn"]
    assert json.loads((out / "run.json").read_text())["status"] == "finished" and not (out / LOCK_NAME).exists()


def test_corrupt_skips_and_counts_unreadable_images(tmp_path):
    for index in range(2):
        (tmp_path / "in" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 60 * index, np.uint8)).save(tmp_path / "in" / "a" / f"{index}.png")
    (tmp_path / "in" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    result = invoke("corrupt", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "-c", "fog", "-s", "1,2")
    assert result.exit_code == 0, result.output
    assert "wrote 4 images" in result.stderr and "skipped 1 unreadable image(s), e.g." in result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "fog" / "2" / "a").iterdir()) == ["0.png", "1.png"]


def test_corrupt_reads_a_16_bit_png_at_its_brightness(tmp_path):
    """A 16-bit greyscale PNG (Pillow mode I;16) keeps its top 8 bits, as Pillow does for 16-bit
    colour; it used to be clipped to white (mean 242 for a 118 image)."""
    import cv2

    (tmp_path / "in" / "a").mkdir(parents=True)
    level = np.full((40, 48), 118 * 257, np.uint16)
    level[:, :24] = 60 * 257
    cv2.imwrite(str(tmp_path / "in" / "a" / "deep.png"), level)
    result = invoke("corrupt", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "-c", "contrast", "-s", "1",
                    "--no-resize")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out" / "contrast" / "1" / "a" / "deep.png"))
    # contrast keeps each channel's mean (89 here) and pulls the two halves towards it.
    assert out.shape == (40, 48, 3) and abs(out.mean() - 89) < 1
    assert 60 < out[:, :24].mean() < 89 < out[:, 24:].mean() < 118


# --- faults: a second writer, SIGTERM, SIGKILL ------------------------------------------------------

def start_compare(out: Path) -> subprocess.Popen:
    """``cema compare`` of source and bn over three domains in a child process; long enough to
    outlast the checks made while it runs (the tests stop it)."""
    import cema_cli.run.api  # noqa: F401 - imported here first, so the in-process checks below are quick

    code = "from cema_cli.cli import main; main()"
    args = ["compare", "--methods", "source,bn", "-c", "gaussian_noise,fog,contrast", "--samples", "1024", "--batch-size", "32", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_rows(out: Path, process: subprocess.Popen, count: int) -> pd.DataFrame:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        rows = pd.read_csv(out / "results.csv") if (out / "results.csv").exists() else pd.DataFrame()
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the run did not write {count} rows: {process.stderr.read() if process.stderr else ''}")


def test_a_second_writer_is_refused_and_sigterm_keeps_the_rows(tmp_path):
    out = tmp_path / "run"
    first = start_compare(out)
    seen = wait_for_rows(out, first, 1)
    second = invoke("compare", "--methods", "bn", *FAST, "--force", "--out", str(out))
    assert second.exit_code == 2 and f"another cema run (pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 130
    assert first.stderr.read().strip().startswith("interrupted:")
    kept = pd.read_csv(out / "results.csv")
    assert len(kept) >= len(seen) and kept.head(len(seen)).equals(seen)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM" and meta["finished_rows"] == len(kept)
    assert not (out / LOCK_NAME).exists()


def test_sigkill_mid_compare_leaves_a_crashed_run_with_every_finished_row(tmp_path):
    out = tmp_path / "run"
    process = start_compare(out)
    seen = wait_for_rows(out, process, 1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    kept = pd.read_csv(out / "results.csv")
    assert len(kept) >= len(seen) and kept.head(len(seen)).equals(seen)  # no finished row lost, none torn
    assert (kept["samples"] == 1024).all()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # SIGKILL gives no chance to write
    status, detail = run_status(out)
    assert status == "crashed" and f"pid {process.pid}" in detail
    report = invoke("report", str(out))
    assert report.exit_code == 0 and report.stderr.startswith(f"note: run {out}: crashed") and report.stderr.count("\n") == 1
    assert invoke("bench", "-m", "bn", *FAST, "--out", str(out)).exit_code == 2  # the crashed run is kept...
    assert invoke("bench", "-m", "bn", *FAST, "--force", "--out", str(out)).exit_code == 0  # ...until --force (stale lock taken over)
    assert run_status(out)[0] == "finished"
