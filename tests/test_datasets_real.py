"""On-disk datasets in the exact published layouts (shared/spec/data.md), written small in
tmp_path, run end to end through `cema compare` with randomly initialised timm and torchvision
models at 32 px; class indices; subsets; bad layouts; truncated images skipped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cema_cli.config import RunConfig
from cema_cli.data import open_dataset
from cema_cli.data.loading import SkippedImageWarning
from cema_cli.data.published import ImageNetC
from cema_cli.data.trees import imagenet_index, imagenet_wnids
from cema_cli.errors import CemaError

# tench (0), goldfish (1), tabby cat (281), toilet tissue (999): written out of sorted order.
WNIDS = ["n15075141", "n01440764", "n02123045", "n01443537"]
SHADE = {w: 40 + 50 * k for k, w in enumerate(WNIDS)}  # a solid grey per class, to trace labels
PER_CLASS = 3
FAST = ("--workers", "0", "--random-init", "--input-size", "32", "--batch-size", "4")


def write_jpeg(path: Path, shade: int, side: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), shade, dtype=np.uint8)).save(path, quality=85)


def imagenet_c_tree(root: Path, corruptions=("gaussian_noise",), severities=(5,)) -> Path:
    """<root>/<corruption>/<severity>/<wnid>/<file>.JPEG"""
    for c in corruptions:
        for s in severities:
            for w in WNIDS:
                for i in range(PER_CLASS):
                    write_jpeg(root / c / str(s) / w / f"ILSVRC2012_val_{i:08d}.JPEG", SHADE[w])
    return root


def class_tree(root: Path, wnids=WNIDS, side: int = 32) -> Path:
    """<root>/<wnid>/<file> (ImageNet-R, or a clean ImageFolder tree)."""
    for w in wnids:
        for i in range(PER_CLASS):
            write_jpeg(root / w / f"art_{i}.jpg", SHADE.get(w, 128), side)
    return root


def cifar_c_files(root: Path, per_severity: int = 6) -> Path:
    """<root>/<corruption>.npy (5 severities stacked) and <root>/labels.npy."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(per_severity) % 10, 5)
    images = np.stack([np.full((32, 32, 3), 10 * (row // per_severity) + labels[row], np.uint8) for row in range(5 * per_severity)])
    np.save(root / "gaussian_noise.npy", images)
    np.save(root / "labels.npy", labels)
    return root


def npy_pair(root: Path, n: int = 10) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(root / "images.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.arange(n) % 3)
    return root


def stream_all(dataset, corruption="gaussian_noise", severity=5, seed=0, batch_size=5):
    stream = dataset.stream(corruption, severity, seed, None, batch_size)
    batches = list(stream)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), stream


def results(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


# --- class indices ----------------------------------------------------------------------------

def test_imagenet_class_index_is_the_position_in_the_sorted_wnids():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    index = imagenet_index()
    assert (index["n01440764"], index["n01443537"], index["n02123045"], index["n15075141"]) == (0, 1, 281, 999)


def test_imagenet_c_labels_follow_the_sorted_wnid_order(tmp_path):
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(imagenet_c_tree(tmp_path)), workers=0))
    images, labels, _ = stream_all(dataset)
    assert len(labels) == len(WNIDS) * PER_CLASS
    shade_to_index = {SHADE[w]: imagenet_index()[w] for w in WNIDS}
    for image, label in zip(images, labels):
        shade = min(SHADE.values(), key=lambda v: abs(v - float(image.float().mean())))
        assert int(label) == shade_to_index[shade]
    assert images.shape[1:] == (3, 32, 32)  # no resize or crop


def test_stream_order_is_fixed_by_the_seed(tmp_path):
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(imagenet_c_tree(tmp_path)), workers=0))
    _, first, _ = stream_all(dataset, seed=1)
    _, again, _ = stream_all(dataset, seed=1)
    _, other, _ = stream_all(dataset, seed=2)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert sorted(first.tolist()) == sorted(other.tolist())


def test_imagenet_r_labels_index_its_own_classes_and_keep_their_logits(tmp_path):
    from cema_cli.run.api import Events, open_session

    root = class_tree(tmp_path / "r", side=40)
    config = RunConfig(dataset="imagenet-r", data_root=str(root), corruptions=("none",), edge="timm:resnet10t",
                       cloud="timm:resnet10t", random_init=True, input_size=32, workers=0, device="cpu")
    session = open_session(config, Events())
    dataset = session.dataset
    assert dataset.num_classes == 4 and dataset.class_subset == (0, 1, 281, 999)
    images, labels, _ = stream_all(dataset, corruption="none")
    assert images.shape[1:] == (3, 224, 224)  # resize 256, center crop 224
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]
    model = session.edge_source
    with torch.no_grad():
        kept = model(images[:4])
        full = model.net(torch.nn.functional.interpolate((images[:4].float() - model.mean) / model.std, size=(32, 32), mode="bilinear", antialias=True))
    assert kept.shape == (4, 4)
    assert torch.allclose(kept, full[:, [0, 1, 281, 999]], atol=1e-5)


# --- end to end, every dataset kind -------------------------------------------------------------

def make_root(kind: str, tmp_path: Path) -> Path:
    return {"imagenet-c": lambda: imagenet_c_tree(tmp_path / "c"), "imagenet-r": lambda: class_tree(tmp_path / "r"),
            "cifar10-c": lambda: cifar_c_files(tmp_path / "cc"), "folder": lambda: class_tree(tmp_path / "f"),
            "npy": lambda: npy_pair(tmp_path / "n")}[kind]()


@pytest.mark.parametrize(
    ("kind", "edge", "corruption", "samples", "source", "constants"),
    [
        ("imagenet-c", "timm:resnet10t", "gaussian_noise", 12, "files", None),
        ("imagenet-r", "torchvision:resnet18", "none", 12, "files", None),
        ("cifar10-c", "timm:resnet10t", "gaussian_noise", 6, "files", None),
        ("folder", "torchvision:resnet18", "gaussian_noise", 12, "generated", "cifar"),
        ("npy", "timm:resnet10t", "gaussian_noise", 10, "generated", "cifar"),
    ],
)
def test_bench_runs_end_to_end_on_every_dataset_kind(cli, tmp_path, kind, edge, corruption, samples, source, constants):
    out = tmp_path / "run"
    result = cli("compare", "--methods", "source,bn", "--dataset", kind, "--data-root", str(make_root(kind, tmp_path)),
                 "--edge", edge, "--cloud", edge, "-c", corruption, "--out", str(out), "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    frame = results(out)
    assert list(frame["method"]) == ["source", "bn"]
    assert list(frame["samples"]) == [samples, samples]
    assert set(frame["dataset"]) == {kind} and set(frame["corruption_source"]) == {source}
    assert set(frame["edge_weights"]) == {"random-init"} and set(frame["skipped_images"]) == {0}
    assert frame["accuracy"].between(0, 1).all()
    if constants:
        assert set(frame["constants"]) == {constants}


def test_cifar10_c_severity_k_reads_rows_k_minus_1_to_k(tmp_path):
    dataset = open_dataset(RunConfig(dataset="cifar10-c", data_root=str(cifar_c_files(tmp_path)), workers=0))
    for severity in (1, 3, 5):
        images, labels, _ = stream_all(dataset, severity=severity)
        assert len(labels) == 6
        assert torch.equal(images[:, 0, 0, 0].long(), 10 * (severity - 1) + labels)  # the row encodes its severity


def test_generated_corruptions_do_not_depend_on_the_order_or_the_workers(tmp_path):
    root = npy_pair(tmp_path)
    config = RunConfig(dataset="npy", data_root=str(root), workers=0)
    images0, labels0, _ = stream_all(open_dataset(config), seed=0)
    images1, labels1, _ = stream_all(open_dataset(RunConfig(dataset="npy", data_root=str(root), workers=2)), seed=3)
    clean = torch.from_numpy(np.load(root / "images.npy")).permute(0, 3, 1, 2)
    assert not torch.equal(images0.sort(dim=0).values, clean.sort(dim=0).values)  # really corrupted
    def key(images, labels):
        return sorted(zip(labels.tolist(), images.flatten(1).sum(1).tolist()))

    assert key(images0, labels0) == key(images1, labels1)


# --- subsets ----------------------------------------------------------------------------------

def test_subset_count_is_a_seeded_choice_shared_by_every_domain(tmp_path):
    root = imagenet_c_tree(tmp_path, corruptions=("gaussian_noise", "snow"))
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), subset="5", workers=0))
    chosen = dataset.files("gaussian_noise", 5)
    assert len(chosen) == 5 and dataset.domain_size("snow", 5) == 5
    assert dataset.files("snow", 5) == chosen
    other = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), subset="5", seed=1, workers=0))
    assert other.files("gaussian_noise", 5) != chosen


def test_subset_file_lists_wnid_file_paths(tmp_path):
    root = imagenet_c_tree(tmp_path / "c")
    listing = tmp_path / "subset.txt"
    listing.write_text("n02123045/ILSVRC2012_val_00000001.JPEG 281\nval/n01440764/ILSVRC2012_val_00000002.JPEG\n")
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), subset=str(listing), workers=0))
    assert dataset.files("gaussian_noise", 5) == ["n01440764/ILSVRC2012_val_00000002.JPEG", "n02123045/ILSVRC2012_val_00000001.JPEG"]
    listing.write_text("n02123045/missing.JPEG\n")
    with pytest.raises(CemaError, match="not in .* e.g. n02123045/missing.JPEG"):
        open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), subset=str(listing), workers=0)).files("gaussian_noise", 5)


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kind", "layout", "expected"),
    [
        ("imagenet-c", "class tree", "expected <root>/<corruption>/<severity>/<wnid>/<file>.JPEG"),
        ("cifar10-c", "class tree", "expected <root>/<corruption>.npy"),
        ("imagenet-r", "imagenet-c", "expected <root>/<wnid>/<file>"),
        ("npy", "class tree", "expected <root>/images.npy"),
        ("folder", "empty", "expected <root>/<class>/<file>"),
    ],
)
def test_wrong_layout_says_what_was_expected_and_found(cli, tmp_path, kind, layout, expected):
    root = {"class tree": lambda: class_tree(tmp_path / "t"), "imagenet-c": lambda: imagenet_c_tree(tmp_path / "c"),
            "empty": lambda: (tmp_path / "e").mkdir() or tmp_path / "e"}[layout]()
    found = {"class tree": "found n01440764/", "imagenet-c": "found gaussian_noise/", "empty": "found an empty folder"}[layout]
    result = cli("bench", "--dataset", kind, "--data-root", str(root), "--out", str(tmp_path / "run"), *FAST)
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert expected in text and found in text


def test_missing_corruption_is_named_before_any_model_loads(cli, tmp_path):
    root = imagenet_c_tree(tmp_path / "c")
    result = cli("bench", "--dataset", "imagenet-c", "--data-root", str(root), "-c", "gaussian_noise,snow", "--out", str(tmp_path / "run"))
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "corruption folder 'snow' is missing" in text and "found: gaussian_noise" in text
    result = cli("bench", "--dataset", "cifar10-c", "--data-root", str(cifar_c_files(tmp_path / "cc")), "-c", "fog", "--out", str(tmp_path / "r2"))
    assert result.exit_code == 2 and "fog.npy is missing" in result.output


def test_truncated_jpeg_is_skipped_with_a_warning_and_counted(cli, tmp_path):
    root = imagenet_c_tree(tmp_path / "c")
    broken = root / "gaussian_noise" / "5" / "n01440764" / "ILSVRC2012_val_00000001.JPEG"
    bigger = tmp_path / "big.JPEG"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(bigger, quality=85)
    broken.write_bytes(bigger.read_bytes()[:400])  # cut short mid-scan
    (root / "gaussian_noise" / "5" / "n01440764" / "garbage.JPEG").write_bytes(b"not an image")
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=2))
    with pytest.warns(SkippedImageWarning) as record:
        _, labels, stream = stream_all(dataset)
    messages = " ".join(str(w.message) for w in record)
    assert "ILSVRC2012_val_00000001.JPEG: " in messages and "garbage.JPEG: cannot identify image file" in messages
    assert stream.skipped == 2 and len(labels) == len(WNIDS) * PER_CLASS - 1
    out = tmp_path / "run"
    with pytest.warns(SkippedImageWarning):
        result = cli("bench", "--method", "source", "--dataset", "imagenet-c", "--data-root", str(root), "--edge", "timm:resnet10t",
                     "--cloud", "timm:resnet10t", "--out", str(out), "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    row = results(out).iloc[0]
    assert (row["skipped_images"], row["samples"]) == (2, len(WNIDS) * PER_CLASS - 1)


def test_eata_clean_set_needs_clean_root_and_reads_it(tmp_path):
    root = imagenet_c_tree(tmp_path / "c")
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), workers=0))
    with pytest.raises(CemaError, match="--clean-root .* or use method 'eta'"):
        dataset.clean_samples(4)
    clean = class_tree(tmp_path / "clean", side=300)
    dataset = open_dataset(RunConfig(dataset="imagenet-c", data_root=str(root), clean_root=str(clean), workers=0))
    images = dataset.clean_samples(5, seed=0)
    assert images.shape == (5, 3, 224, 224) and images.dtype == torch.uint8


def test_imagenet_defaults_are_the_papers(cli, tmp_path, monkeypatch):
    assert (ImageNetC.default_edge, ImageNetC.default_cloud) == ("torchvision:resnet18", "torchvision:resnet101")
    config = RunConfig(dataset="imagenet-c")
    assert (config.batch_size, config.protocol) == (64, "reset-each-shift")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = imagenet_c_tree(tmp_path / "c")
    result = cli("bench", "--dataset", "imagenet-c", "--data-root", str(root), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2  # the pretrained paper models, never random weights
    expected = f"torchvision:resnet18 on this machine (looked for {tmp_path / 'torch'}/hub/checkpoints/resnet18-f37072fd.pth)"
    assert expected.replace(" ", "") in "".join(result.output.split())  # rich may wrap inside the path
