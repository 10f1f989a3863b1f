"""Beyond images (issue 25): the watch and sentiment datasets, their shifts, models, channel bytes
and the methods whose assumptions hold. Small slices: the whole file runs in well under a minute."""

from __future__ import annotations

import gzip
import io
import pickle
import random
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cema_cli.corruptions import sensor, text
from cema_cli.data import NATURAL_DOMAINS, SHIFT_DOMAINS, dataset_domains, sentiment, watch
from cema_cli.errors import CemaError
from cema_cli.link.channel import encode_uplink
from cema_cli.models import embedded, modal
from cema_cli.models.flops import forward_gflops_per_sample
from cema_cli.models.nets import Classifier
from cema_cli.models.seqnets import TextBag, TextTransformer
from cema_cli.run.assumptions import check_assumptions, resolved_channel
from cema_cli.config import RunConfig
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.sar import SAR_SUBSET

# --- watch: the package file, read once without pickle's globals ------------------------------


def npy_of(obj: object) -> bytes:
    """An .npy file holding one pickled object, as numpy writes watch_dataset.npy."""
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "|O", "fortran_order": False, "shape": ()})
    stream.write(pickle.dumps(obj, protocol=2))
    return stream.getvalue()


class Payload:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


def test_the_unpickler_builds_arrays_and_refuses_any_other_global():
    with pytest.raises(pickle.UnpicklingError, match="print is not a numpy array part"):
        watch.read_package_file(npy_of({"X": [Payload()]}))
    table = {"X": [np.ones((120, 6))], "y": np.array([3]), "subject": np.array([2]), "side": np.array([1.0])}
    arrays = watch.read_package_file(npy_of(table))
    assert arrays["samples"].shape == (120, 6) and arrays["starts"].tolist() == [0, 120] and arrays["label"].tolist() == [3]


def test_recordings_match_the_published_description():
    rec = watch.recordings()
    assert len(rec.label) == 140 and len(rec.samples) == 244_102 and rec.samples.dtype == torch.int16
    assert sorted(set(zip(rec.subject.tolist(), rec.side.tolist()))) == [(s, w) for s in range(1, 11) for w in (0, 1)]
    lengths = np.diff(rec.starts)
    assert sum(len(watch.window_starts(0, n)) for n in lengths) == 4677  # 2-s windows, 50% overlap


def test_the_cache_holds_the_package_files_values_as_imu_counts():
    arrays = watch.read_cache(watch.cache_file())  # allow_pickle=False inside
    source = watch.read_package_file(watch.package_file().read_bytes())
    assert np.array_equal(arrays["samples"], watch.to_counts(source["samples"]))
    assert watch.to_counts(np.array([[9.0, -9.0, 0.5, 40.0, -0.001, 0.0]])).tolist() == [[32767, -32768, 2048, 32767, -1, 0]]


def test_splits_are_disjoint_in_time_and_sized():
    sizes = {name: len(watch.split(name)[1]) for name in ("train", "none", "subject", "wrist")}
    assert sizes == {"train": 878, "none": 558, "subject": 733, "wrist": 1683}
    rec = watch.recordings()
    train = watch.spans(rec, watch.SOURCE_SUBJECTS, watch.RIGHT, "train")
    test = watch.spans(rec, watch.SOURCE_SUBJECTS, watch.RIGHT, "test")
    for (r, _, train_end), (r2, test_begin, _) in zip(train, test):
        assert r == r2 and train_end == test_begin  # a window of either split lies wholly on its side of the cut
    assert set(watch.split("subject")[1].tolist()) == set(range(7))


def test_model_normalisation_is_the_source_statistics():
    samples, _ = watch.split("train")
    physical = samples.double() / torch.tensor(watch.COUNTS_PER_UNIT, dtype=torch.float64).view(1, -1, 1)
    assert physical.mean(dim=(0, 2)).numpy() == pytest.approx(modal.SIGNAL_MEAN, abs=6e-4)
    assert physical.std(dim=(0, 2)).numpy() == pytest.approx(modal.SIGNAL_STD, abs=6e-4)


# --- sensor faults ------------------------------------------------------------------------------

def windows(n: int = 6) -> torch.Tensor:
    samples, _ = watch.split("none")
    return samples[:n].double() / torch.tensor(watch.COUNTS_PER_UNIT, dtype=torch.float64).view(1, -1, 1)


def test_a_windows_fault_depends_on_its_index_not_on_the_batch():
    x, unit = windows(), watch.channel_std()
    for name in sensor.SENSOR_SHIFTS:
        whole = sensor.shift_windows(x, unit, name, 4, seed=3, indices=torch.arange(6))
        part = sensor.shift_windows(x[2:4], unit, name, 4, seed=3, indices=torch.arange(2, 4))
        assert torch.equal(whole[2:4], part), name


def test_misalignment_rotates_both_sensors_alike():
    x = windows()
    turned = sensor.shift_windows(x, watch.channel_std(), "misalignment", 5, seed=0, indices=torch.arange(6))
    for sl in (slice(0, 3), slice(3, 6)):  # vector lengths kept, per time step
        assert torch.allclose(turned[:, sl].norm(dim=1), x[:, sl].norm(dim=1))
    angle = torch.acos((turned[:, :3] * x[:, :3]).sum(1) / (x[:, :3].norm(dim=1) * turned[:, :3].norm(dim=1))).max()
    assert float(angle) <= np.radians(sensor.MISALIGNMENT[-1]) + 1e-6


def test_noise_dropout_and_identity_settings(monkeypatch):
    x, unit = windows(200), watch.channel_std()
    noisy = sensor.shift_windows(x, unit, "gaussian_noise", 2, seed=0, indices=torch.arange(200)) - x
    assert (noisy.std(dim=(0, 2)) / unit).numpy() == pytest.approx([sensor.NOISE[1]] * 6, rel=0.03)
    dropped = sensor.shift_windows(x, unit, "channel_dropout", 5, seed=0, indices=torch.arange(200))
    dead = (dropped == 0).all(dim=2)
    assert torch.equal(dropped, x * ~dead[:, :, None]) and 0.55 < float(dead.double().mean()) < 0.75  # p = 0.65
    monkeypatch.setattr(sensor, "RATE_JITTER", ((0.0, 0.0),) * 5)
    monkeypatch.setattr(sensor, "GAIN_DRIFT", ((0.0, 0.0),) * 5)
    context, _ = watch.windows(watch.recordings(), watch.spans(watch.recordings(), (1,), watch.RIGHT, "test"), margin=watch.FAULT_MARGIN)
    central = context[:, :, watch.FAULT_MARGIN:-watch.FAULT_MARGIN].double()
    for name in ("rate_jitter", "gain_drift"):
        same = sensor.shift_windows(context.double(), unit, name, 3, 0, torch.arange(len(context)), watch.FAULT_MARGIN)
        assert torch.allclose(same, central), name


def test_every_fault_lowers_source_accuracy_at_every_severity():
    """The calibration the constants were chosen by (ImageNet-C's rule): on the 558 windows of
    ``none``, the shipped edge model's accuracy falls from severity 1 to 5 for every fault."""
    model, dataset = embedded.load_or_train("watch-edge"), watch.WatchDataset()
    labels = watch.split("none")[1]
    with torch.inference_mode():
        clean = (model(watch.split("none")[0]).argmax(1) == labels).double().mean()
        for fault in sensor.SENSOR_SHIFTS:
            accuracy = [float((model(dataset.domain(fault, s)[0]).argmax(1) == labels).double().mean()) for s in range(1, 6)]
            assert all(a > b for a, b in zip([float(clean), *accuracy], accuracy)), (fault, accuracy)


# --- text shifts --------------------------------------------------------------------------------

def test_keyboard_neighbours_and_one_edit_typos():
    assert sorted(text.neighbours("g")) == sorted("fhtb") and text.neighbours("Q") == "WA"
    rng = random.Random(0)
    for _ in range(200):  # no two neighbouring letters alike: every kind of typo changes the word
        typo = text.typo("sentiment", rng)
        assert typo != "sentiment" and abs(len(typo) - len("sentiment")) <= 1


def test_text_shifts_are_seeded_per_sentence_and_identity_at_zero(monkeypatch):
    sentences = ["A truly great film.", "It was NOT good, sadly!", "Plain words here"]
    for name in text.TEXT_SHIFTS:
        whole = text.shift_sentences(sentences, name, 5, seed=1)
        assert [text.shift_sentence(s, name, 5, text.sentence_random(1, name, 5, i)) for i, s in enumerate(sentences)] == whole
    for table in ("TYPOS", "SYNONYMS", "CASING"):
        monkeypatch.setattr(text, table, (0.0,) * 5)
    assert all(text.shift_sentences(sentences, n, 5, 0) == sentences for n in text.TEXT_SHIFTS)


def test_synonym_swaps_come_from_wordnet_and_keep_the_case():
    table = text.synonym_table()
    assert {"film", "flick", "picture"} <= set(table["movie"]) and "the" not in table and "not" not in table
    out = text.shift_sentences(["Movie movie the"], "synonyms", 5, seed=0)[0].split()
    assert out[2] == "the"
    for original, swapped in zip(["Movie", "movie"], out[:2]):
        assert swapped == original or swapped.lower() in table["movie"] and swapped[0].isupper() == original[0].isupper()
    assert (text.SYNONYM_TABLE.parent / "WORDNET-LICENSE").read_text().count("Princeton University") >= 2


def test_casing_changes_only_case_and_punctuation():
    sentence = "The acting, frankly, was great; the plot was not."
    shifted = text.shift_sentences([sentence], "casing", 5, seed=2)[0]
    letters = lambda s: "".join(c for c in s.lower() if c.isalpha())  # noqa: E731
    assert shifted != sentence and letters(shifted) == letters(sentence)


# --- sentiment: the source archive, read in memory -------------------------------------------

def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return stream.getvalue()


RATED = {
    "movies": [("1", "2.5", "A wonderful, moving film."), ("2", "-3.1", "Dull and far too long."), ("3", "0.2", "It is a film."),
               ("4", "1.9", "The cast is great."), ("5", "-0.6", "Not my kind of movie.")],
    "tweets": [("1", "2.7", "So lucky today!"), ("2", "-2.0", "worst day ever :(")],
    "amazon": [("1_1", "-0.9", "no picture at all"), ("1_2", "1.2", "works fine, happy with it")],
    "nyt": [("1_1", "0.4", "Events include sprinting."), ("1_2", "-1.5", "The plan is a failure.")],
}


def fake_sdist(extra: dict[str, bytes] | None = None, links: dict[str, str] | None = None) -> bytes:
    """vaderSentiment's source archive in its real layout, with a few rated sentences per domain."""
    files = {sentiment.MEMBER.format(stem): "\r\n".join("\t".join(r) for r in RATED[d]).encode() for d, stem in sentiment.FILES.items()}
    inner = tar_bytes({**files, **(extra or {})}, links)
    return tar_bytes({"vaderSentiment-3.3.2/setup.py": b"", sentiment.INNER: inner})


@pytest.fixture
def sentiment_cache(tmp_path, monkeypatch):
    """A cache holding a small archive in the real layout (its digest stands in for PyPI's)."""
    def install(data: bytes) -> None:
        (tmp_path / "packages").mkdir(exist_ok=True)
        (tmp_path / "packages" / sentiment.SDIST).write_bytes(data)
        monkeypatch.setattr(sentiment, "SDIST_SHA256", __import__("hashlib").sha256(data).hexdigest())
        clear_sentiment()

    monkeypatch.setenv("CEMA_CACHE", str(tmp_path))
    install(fake_sdist())
    yield install
    clear_sentiment()


def clear_sentiment() -> None:
    for cached in (sentiment.rated_sentences, sentiment.movie_split, sentiment.split):
        cached.cache_clear()


def test_rated_sentences_are_labelled_by_sign_above_half_a_point(sentiment_cache, tmp_path):
    rated = sentiment.rated_sentences()
    assert rated["movies"][0] == ["A wonderful, moving film.", "Dull and far too long.", "The cast is great.", "Not my kind of movie."]
    assert rated["movies"][1].tolist() == [1, 0, 1, 0] and rated["nyt"][1].tolist() == [0]  # 0.4 is dropped
    assert sentiment.cache_file().is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["data", "packages"]


def test_archive_members_are_read_by_exact_name_never_extracted(sentiment_cache, tmp_path):
    sentiment_cache(fake_sdist(extra={"../../escaped.txt": b"x", "/tmp/absolute.txt": b"y"}))
    assert len(sentiment.rated_sentences()["tweets"][0]) == 2
    assert not (tmp_path.parent / "escaped.txt").exists() and not list(tmp_path.rglob("escaped.txt"))
    inner_links = fake_sdist(links={sentiment.MEMBER.format("tweets"): "/etc/passwd"})
    with pytest.raises(ValueError, match="not a regular file"):
        sentiment.read_sdist(inner_links)


def test_token_ids_are_padded_cut_and_counted_in_the_uplink(sentiment_cache):
    ids = sentiment.token_ids(["good", "word " * 200])
    assert ids.shape == (2, sentiment.MAX_TOKENS) and ids.dtype == torch.int32
    assert (ids[0] != 0).sum() == 1 and (ids[1] != 0).all()
    _, sizes = encode_uplink(ids, "tokens", 85)
    assert sizes == [2, 2 * sentiment.MAX_TOKENS]


# --- models, channel, assumptions ---------------------------------------------------------------

def test_recipes_ship_their_weights_and_models_are_small():
    for name in modal.RECIPES:
        path = embedded.checkpoint_path(name)
        assert path.parent == embedded.SHIPPED and modal.RECIPES[name].digest() in path.name
    assert sum(embedded.checkpoint_path(n).stat().st_size for n in modal.RECIPES) < 4e6


def test_sequence_models_ignore_padding_and_count_flops():
    table = torch.randn(50, 8, dtype=torch.float16)
    ids = torch.tensor([[5, 7, 9, 0, 0], [3, 0, 0, 0, 0]], dtype=torch.int32)
    for net in (TextBag(table, 1, 16, 2, 2), TextTransformer(table, 2, 16, 1, 2, 8, 2)):
        model = Classifier(net.eval(), None, None)
        assert torch.allclose(model(ids), model(ids[:, :3]), atol=1e-5)
        assert forward_gflops_per_sample(model, (5,), torch.int32) > 0
    # multiply-adds by hand: convolutions (out x in x kernel x output length) at T = 100, 50, 25, 13, then the head
    macs = 32 * 6 * 5 * 100 + 32 * 32 * 5 * 50 + 64 * 32 * 5 * 25 + 64 * 64 * 5 * 13 + 64 * 7
    assert forward_gflops_per_sample(embedded.build("watch-edge"), (6, 100), torch.int16) == pytest.approx(2 * macs / 1e9)


def test_signal_classifier_normalises_each_channel():
    net = nn.Identity()
    model = Classifier(net, (1.0, -2.0), (0.5, 4.0), scale=(10.0, 100.0))
    x = torch.tensor([[[10, 20], [-200, 200]]], dtype=torch.int16)
    assert torch.equal(model(x), torch.tensor([[[0.0, 2.0], [0.0, 1.0]]]))


def test_window_bytes_are_int16_samples():
    samples = watch.split("none")[0][:3]
    assert encode_uplink(samples, "int16", 85)[1] == [1200] * 3
    assert encode_uplink(samples, "float32", 85)[1] == [2400] * 3
    assert encode_uplink(samples, "native", 85)[1] == [1200] * 3  # a channel used without a run: by dtype
    assert encode_uplink(torch.tensor([[5, 9, 0]], dtype=torch.int32), "native", 85)[1] == [4]
    config = RunConfig(dataset="watch", corruptions=("subject",))
    assert resolved_channel(config, watch.WatchDataset).channel.uplink_encoding == "int16"
    jpeg = replace(config, channel=replace(config.channel, uplink_encoding="jpeg"))
    with pytest.raises(CemaError, match="int16 sensor windows, which travel as int16 or float32"):
        resolved_channel(jpeg, watch.WatchDataset)


def methods(*names: str) -> dict:
    return {n: (STRATEGIES.get(n), None) for n in names}


def test_methods_whose_assumptions_fail_are_refused_in_one_line():
    text_model = Classifier(TextBag(torch.zeros(10, 4, dtype=torch.float16), 1, 8, 1, 2), None, None)
    check_assumptions(methods("source", "tent", "eata", "sar", "cema", "lame", "t3a"), sentiment.SentimentDataset, text_model, "sentiment-edge")
    with pytest.raises(CemaError) as refused:
        check_assumptions(methods("source", "bn", "cotta", "tent"), sentiment.SentimentDataset, text_model, "sentiment-edge")
    message = str(refused.value)
    assert "bn only re-estimates BatchNorm statistics" in message and "cotta averages" in message
    assert "run --methods source,tent" in message and "\n" not in message
    signal_model = embedded.build("watch-edge")
    check_assumptions(methods("bn", "tent", "sar", "cema"), watch.WatchDataset, signal_model, "watch-edge")
    with pytest.raises(CemaError, match="deyo picks samples by how their prediction drops under a patch shuffle"):
        check_assumptions(methods("deyo"), watch.WatchDataset, signal_model, "watch-edge")


def test_sar_adapts_the_batchnorm1d_of_sensor_networks():
    chosen = SAR_SUBSET.select(embedded.build("watch-edge"))
    assert chosen and all(".bn." in name for name in chosen)


def test_declared_domains_are_the_datasets():
    for name, cls in (("watch", watch.WatchDataset), ("sentiment", sentiment.SentimentDataset)):
        assert dataset_domains(name) == cls.domains() and cls.natural == NATURAL_DOMAINS[name]
    assert SHIFT_DOMAINS["watch"] == sensor.SENSOR_SHIFTS and SHIFT_DOMAINS["sentiment"] == text.TEXT_SHIFTS
    assert dataset_domains("mnist") is None
    with gzip.open(text.SYNONYM_TABLE, "rt") as packed:
        assert packed.read(2) == '{"'
