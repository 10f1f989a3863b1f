"""Every shipped example configuration runs end to end as shipped (issue 21, item 5): on tiny
generated trees in the published layouts, with random-init weight files written where
torchvision and RobustBench keep them under their real file names (TORCH_HOME,
CEMA_ROBUSTBENCH_DIR); only the paths each config's header documents (--data-root, the clean
set, the subset), --out, a small --samples, --device cpu and --workers 0 are given. Then
`cema report --expected` puts the measured numbers beside the published ones.

The CEMA paper's configuration runs on 224-px files, as ImageNet-C is published; the ResNet-50
configurations read 64-px files and the CIFAR ones 16-px files (the layouts are the published
ones), which keeps this module within the suite's budget on two CPU cores."""

from __future__ import annotations

import hashlib
import io
import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cema_cli.corruptions import COMMON
from cema_cli.data.trees import imagenet_wnids
from weights_helpers import robustbench_file, torchvision_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(p.name for p in EXAMPLES.glob("*.toml"))
WNIDS = imagenet_wnids()[:2]
# The file each edge model is read from: torchvision's registry names, RobustBench's layout.
EDGE_FILES = {
    "torchvision:resnet18@IMAGENET1K_V1": "resnet18-f37072fd.pth", "torchvision:resnet50@IMAGENET1K_V1": "resnet50-0676ba61.pth",
    "robustbench:cifar10/corruptions/Standard": "Standard.pt",
    "robustbench:cifar100/corruptions/Hendrycks2020AugMix_ResNeXt": "Hendrycks2020AugMix_ResNeXt.pt",
}


def jpeg(path: Path, seed: int, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, quality=85)


def imagenet_c(root: Path, side: int) -> Path:
    """The 15 corruptions at severity 5, one validation file in each of two classes."""
    for index, corruption in enumerate(COMMON):
        for k, wnid in enumerate(WNIDS):
            jpeg(root / corruption / "5" / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG", 2 * index + k, side)
    return root


def clean_tree(root: Path, side: int) -> Path:
    for k, wnid in enumerate(WNIDS):
        jpeg(root / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG", 100 + k, side)
    return root


def cifar_c(root: Path, classes: int, side: int) -> Path:
    """<corruption>.npy (5 severities x 2 images) and labels.npy, as published."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    np.save(root / "labels.npy", np.tile(np.array([0, classes - 1]), 5))
    for corruption in COMMON:
        np.save(root / f"{corruption}.npy", rng.integers(0, 256, (10, side, side, 3), dtype=np.uint8))
    return root


def clean_npy(root: Path, classes: int, side: int) -> Path:
    root.mkdir(parents=True)
    np.save(root / "images.npy", np.random.default_rng(1).integers(0, 256, (4, side, side, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.arange(4) % classes)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """torchvision's V1 ResNets in TORCH_HOME, RobustBench's CIFAR models in its model_dir layout,
    written once; returns the folder and each file's sha256 by file name."""
    root = tmp_path_factory.mktemp("weights")
    files = [torchvision_file(root / "torch", arch, "IMAGENET1K_V1", confident=True) for arch in ("resnet18", "resnet50", "resnet101")]
    files += [robustbench_file(root / "rb", name, confident=True)[0] for name in
              ("cifar10/corruptions/Standard", "cifar100/corruptions/Hendrycks2020AugMix_ResNeXt")]
    return root, {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def documented_inputs(config: dict, tmp_path: Path, side: int) -> list[str]:
    """The paths the config's header says to give: the data, the clean set, the subset."""
    if config["dataset"] == "imagenet-c":
        flags = ["--data-root", str(imagenet_c(tmp_path / "imagenet-c", side)), "--clean-root", str(clean_tree(tmp_path / "clean", side))]
        if "subset" in config:  # RobustBench's list format: <wnid>/<file> lines, no newline at the end
            listed = tmp_path / "imagenet_test_image_ids.txt"
            listed.write_text(f"{WNIDS[1]}/ILSVRC2012_val_00000002.JPEG\n{WNIDS[0]}/ILSVRC2012_val_00000001.JPEG")
            flags += ["--subset", str(listed)]
        return flags
    classes = {"cifar10-c": 10, "cifar100-c": 100}[config["dataset"]]
    return ["--data-root", str(cifar_c(tmp_path / "c", classes, side)), "--clean-root", str(clean_npy(tmp_path / "clean", classes, side))]


def run_example(cli, name: str, tmp_path: Path, side: int) -> tuple[dict, pd.DataFrame, Path]:
    config = tomllib.loads((EXAMPLES / name).read_text())
    out = tmp_path / "run"
    result = cli("compare", "--config", str(EXAMPLES / name), *documented_inputs(config, tmp_path, side), "--samples", "1",
                 "--device", "cpu", "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    return config, pd.read_csv(out / "results.csv"), out


@pytest.fixture
def homes(weights, monkeypatch):
    root, digests = weights
    for variable, folder in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("CEMA_ROBUSTBENCH_DIR", "rb")):
        monkeypatch.setenv(variable, str(root / folder))
    return digests


def check_rows(config: dict, rows: pd.DataFrame, digests: dict[str, str], side: int) -> None:
    """Every method on every domain, valid, fed at the files' own size, with the weights' tag and sha256."""
    assert list(rows["method"].unique()) == list(config["methods"]) and set(rows["corruption"]) == set(COMMON)
    assert (rows["status"] == "ok").all() and (rows["edge_input_size"] == f"{side}x{side}").all()
    assert (rows["edge_weights"] == ("pretrained:robustbench" if config["edge"].startswith("robustbench") else "pretrained:IMAGENET1K_V1")).all()
    assert (rows["edge_weights_sha256"] == digests[EDGE_FILES[config["edge"]]]).all()
    assert rows["top5_accuracy"].notna().all() == (config["dataset"] != "cifar10-c")  # top-5 from 100 classes up


def expected_lines(cli, out: Path, name: str) -> pd.DataFrame:
    report = cli("report", str(out), "--expected", str(EXAMPLES / name), "--format", "csv")
    assert report.exit_code == 0, report.output
    return pd.read_csv(io.StringIO(report.output))


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "imagenet_c_paper.toml"])
def test_every_example_config_runs_as_shipped(name, cli, homes, tmp_path):
    side = 64 if name.startswith("imagenet") else 16
    config, rows, out = run_example(cli, name, tmp_path, side)
    check_rows(config, rows, homes, side)
    lines = expected_lines(cli, out, name)
    published = {m for table in config["expected"] for m in table.get("mean", {})} & set(config["methods"])
    assert set(lines["method"]) == published and lines["difference"].notna().all()


def test_the_paper_config_runs_at_224_px_and_compares_uploads_with_the_paper(cli, homes, tmp_path):
    config, rows, out = run_example(cli, "imagenet_c_paper.toml", tmp_path, 224)
    check_rows(config, rows, homes, 224)
    assert (rows["edge_gflops_per_sample"].round(2) == 3.63).all()  # ResNet-18 at 224 px
    cema = rows[rows["method"] == "cema"]
    assert (cema["cloud_weights"] == "pretrained:IMAGENET1K_V1").all() and (cema["cloud_weights_sha256"] == homes["resnet101-63fe2227.pth"]).all()
    assert (rows[rows["method"] == "source"]["cloud_weights"] == "unused").all()
    recorded = {(m["role"], m["sha256"], m["input_size"]) for m in json.loads((out / "run.json").read_text())["models"]}
    assert recorded == {("edge", homes["resnet18-f37072fd.pth"], "224x224"), ("cloud", homes["resnet101-63fe2227.pth"], "224x224")}
    lines = expected_lines(cli, out, "imagenet_c_paper.toml").set_index(["method", "domain"])
    gaussian, line = cema[cema["corruption"] == "gaussian_noise"].iloc[0], lines.loc[("cema", "gaussian_noise-5")]
    assert line["published"] == pytest.approx(100 * 9889 / 50000)  # the paper's count out of 50,000 images
    assert line["measured"] == pytest.approx(100 * gaussian["uploads"] / gaussian["samples"])
    assert line["difference"] == pytest.approx(line["measured"] - line["published"])
    assert set(lines.index.get_level_values(0)) == {"cema", "eata"}  # the methods the paper counts uploads for
    table = cli("report", str(out), "--expected", str(EXAMPLES / "imagenet_c_paper.toml"))
    assert "measured vs published" in table.output and "arXiv 2402.17316" in " ".join(table.output.split())
