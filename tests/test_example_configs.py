"""Every shipped example configuration runs end to end as shipped (issue 21, item 5): on tiny
generated trees in the published layouts, with random-init weight files written where
torchvision, timm and RobustBench keep them under their real file names (TORCH_HOME, HF_HOME,
CEMA_ROBUSTBENCH_DIR); only --data-root, the clean set and the subset each config documents,
--out and a small --samples are given. Then `cema report --expected` puts the measured numbers
beside the published ones."""

from __future__ import annotations

import hashlib
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


def jpeg(path: Path, seed: int, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=85)


def imagenet_c(root: Path, side: int) -> Path:
    """The 15 corruptions at severity 5, one ImageNet validation file in each of two classes."""
    for index, corruption in enumerate(COMMON):
        for k, wnid in enumerate(WNIDS):
            jpeg(root / corruption / "5" / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG", 2 * index + k, side)
    return root


def clean_tree(root: Path, side: int) -> Path:
    for k, wnid in enumerate(WNIDS):
        jpeg(root / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG", 100 + k, side)
    return root


def cifar_c(root: Path, classes: int) -> Path:
    """<corruption>.npy (5 severities x 2 images of 32 px) and labels.npy, as published."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    np.save(root / "labels.npy", np.tile(np.array([0, classes - 1]), 5))
    for corruption in COMMON:
        np.save(root / f"{corruption}.npy", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    return root


def clean_npy(root: Path, classes: int) -> Path:
    root.mkdir(parents=True)
    np.save(root / "images.npy", np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.arange(4) % classes)
    return root


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """Weight files under their real names: torchvision's V1 ResNets in TORCH_HOME, RobustBench's
    CIFAR models in its model_dir layout (written once for every config)."""
    root = tmp_path_factory.mktemp("weights")
    files = [torchvision_file(root / "torch", arch, "IMAGENET1K_V1") for arch in ("resnet18", "resnet50", "resnet101")]
    files += [robustbench_file(root / "rb", name)[0] for name in
              ("cifar10/corruptions/Standard", "cifar100/corruptions/Hendrycks2020AugMix_ResNeXt")]
    return root, {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def documented_inputs(name: str, tmp_path: Path) -> list[str]:
    """The paths the config's header says to give: the data, the clean set, the subset."""
    config = tomllib.loads((EXAMPLES / name).read_text())
    side = 224 if "paper.toml" in name else 32  # the ResNet-50 configs on 32-px files keep the suite fast
    if config["dataset"] == "imagenet-c":
        flags = ["--data-root", str(imagenet_c(tmp_path / "imagenet-c", side)), "--clean-root", str(clean_tree(tmp_path / "clean", side))]
        if "subset" in config:  # RobustBench's list format: <wnid>/<file> lines, no newline at the end
            listed = tmp_path / "imagenet_test_image_ids.txt"
            listed.write_text(f"{WNIDS[1]}/ILSVRC2012_val_00000002.JPEG\n{WNIDS[0]}/ILSVRC2012_val_00000001.JPEG")
            flags += ["--subset", str(listed)]
        return flags
    classes = {"cifar10-c": 10, "cifar100-c": 100}[config["dataset"]]
    return ["--data-root", str(cifar_c(tmp_path / "c", classes)), "--clean-root", str(clean_npy(tmp_path / "clean", classes))]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_example_config_runs_as_shipped_and_reports_beside_the_published_numbers(name, cli, homes, tmp_path, monkeypatch):
    root, digests = homes
    for variable, folder in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("CEMA_ROBUSTBENCH_DIR", "rb")):
        monkeypatch.setenv(variable, str(root / folder))
    out = tmp_path / "run"
    result = cli("compare", "--config", str(EXAMPLES / name), *documented_inputs(name, tmp_path), "--samples", "1", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.output
    config, rows = tomllib.loads((EXAMPLES / name).read_text()), pd.read_csv(out / "results.csv")
    assert list(rows["method"].unique()) == list(config["methods"]) and set(rows["corruption"]) == set(COMMON)
    assert rows["edge_weights_sha256"].isin(digests.values()).all() and rows["edge_weights"].str.startswith("pretrained:").all()
    report = cli("report", str(out), "--expected", str(EXAMPLES / name))
    assert report.exit_code == 0, report.output
    assert "measured vs published" in report.output and config["expected"][0]["source"][:40] in " ".join(report.output.split())
