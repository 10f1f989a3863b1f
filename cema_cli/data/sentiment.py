"""``sentiment``: the human-rated sentences of VADER (Hutto and Gilbert, ICWSM 2014; MIT licence).

They ship in the source archive of ``vaderSentiment`` 3.3.2 on PyPI (not in its wheel), inside
``additional_resources/hutto_ICWSM_2014.tar.gz``: four domains of sentences, each rated by at
least 20 people from -4 to +4. ``cema prepare`` fetches that archive once with pip (``pip
download --no-deps --no-binary :all: vaderSentiment==3.3.2``) into the cache and checks its
sha256. cema reads the four ground-truth files by their exact member names straight from the
archives, in memory: nothing is extracted, no path inside an archive is ever written.

- Labels: the sign of the mean rating, for sentences with |rating| >= 0.5 (the others are
  dropped): movies 10,072, tweets 3,432, Amazon 2,985, NYT 2,970.
- Source: movie reviews. A seeded stratified split keeps 7,000 for training the source models;
  the other 3,072 are the domain ``none``.
- Natural shifts: ``tweets``, ``amazon``, ``nyt`` (a domain shift and a label shift: 40-68% positive).
- Text shifts (cema_cli/corruptions/text.py) on the sentences of ``none``, severities 1-5.

Samples are token ids of wordllama's tokenizer (Llama 2's, 32,000 ids; cema_cli/models/wordvec.py),
int32 (N, 80), padded with id 0 after the sentence; the few longer sentences are cut at 80.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cema_cli.corruptions.text import TEXT_SHIFTS, shift_sentences
from cema_cli.data.cache import cache_dir, write_atomically
from cema_cli.data.memory import Domain, InMemoryDataset, seeded_pick
from cema_cli.errors import CemaError

SDIST = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
PIP_DOWNLOAD = ("download", "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2")
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
FILES = {"movies": "movieReviewSnippets", "tweets": "tweets", "amazon": "amazonReviewSnippets", "nyt": "nytEditorialSnippets"}
MEMBER = "hutto_ICWSM_2014/{}_GroundTruth.txt"
MAX_MEMBER_BYTES = 16 * 2**20  # the largest ground-truth file is 1.4 MB
MIN_RATING = 0.5
TRAIN_COUNT = 7000
SPLIT_SEED = 0
MAX_TOKENS = 80
CLASSES = ("negative", "positive")


# --- the package file ---------------------------------------------------------------------------

def sdist_path() -> Path:
    return cache_dir() / "packages" / SDIST


def fetch_sdist() -> Path:
    """Download the source archive with pip into the cache (``cema prepare``), unless it is there."""
    path = sdist_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", *PIP_DOWNLOAD, "--dest", str(path.parent), "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not path.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CemaError(f"pip could not download {SDIST} from PyPI ({last}); check the network, or copy the file to {path}.")
    sdist_bytes()
    return path


def sdist_bytes() -> bytes:
    """The archive's bytes, checked against vaderSentiment 3.3.2's sha256 on PyPI."""
    path = sdist_path()
    if not path.is_file():
        raise CemaError(f"the sentiment dataset is read from {SDIST}, which is not in the cache ({path}); "
                        "run `cema prepare` once (it fetches the file from PyPI with pip).")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != SDIST_SHA256:
        raise CemaError(f"{path} is not vaderSentiment 3.3.2's source archive (sha256 differs); delete it and run `cema prepare`.")
    return data


def member_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    """One regular file of a tar archive by its exact name, read in memory."""
    try:
        member = archive.getmember(name)
    except KeyError:
        raise ValueError(f"{name} is missing") from None
    if not member.isfile() or member.size > MAX_MEMBER_BYTES:
        raise ValueError(f"{name} is not a regular file of at most {MAX_MEMBER_BYTES} bytes")
    return archive.extractfile(member).read()


def read_sdist(data: bytes) -> dict[str, tuple[list[str], list[float]]]:
    """{domain: (sentences, mean ratings)} from the source archive's bytes."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as outer:
        inner_bytes = member_bytes(outer, INNER)
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        return {domain: parse_ratings(member_bytes(inner, MEMBER.format(stem)).decode("utf-8")) for domain, stem in FILES.items()}


def parse_ratings(text: str) -> tuple[list[str], list[float]]:
    """Lines ``id <tab> mean rating <tab> sentence``."""
    sentences, ratings = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"line {number} is not 'id, rating, sentence' separated by tabs")
        ratings.append(float(parts[1]))
        sentences.append(parts[2].strip())
    return sentences, ratings


# --- the cache of plain arrays ------------------------------------------------------------------

def cache_file() -> Path:
    return cache_dir() / "data" / f"sentiment-{SDIST_SHA256[:12]}.npz"


def build_cache() -> Path:
    try:
        domains = read_sdist(sdist_bytes())
    except (tarfile.TarError, ValueError, EOFError, OSError, UnicodeDecodeError) as error:
        raise CemaError(f"{sdist_path()} cannot be read as vaderSentiment's archive ({error}); delete it and run `cema prepare`.") from None
    arrays = {}
    for domain, (sentences, ratings) in domains.items():
        arrays[f"{domain}_text"] = np.array(sentences, dtype=np.str_)
        arrays[f"{domain}_rating"] = np.array(ratings, dtype=np.float64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return write_atomically(cache_file(), write)


def read_cache(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            found = {d: (stored[f"{d}_text"], stored[f"{d}_rating"]) for d in FILES}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise corrupt(path, f"{type(error).__name__}: {error}") from None
    for domain, (text, rating) in found.items():
        if text.dtype.kind != "U" or rating.dtype != np.float64 or text.shape != rating.shape or not len(text):
            raise corrupt(path, f"{domain} does not hold sentences with one rating each")
    return found


def corrupt(path: Path, why: str) -> CemaError:
    return CemaError(f"the sentiment cache {path} is corrupt ({why}); delete it and rerun: cema rebuilds it from {SDIST}.")


def prepare() -> list[Path]:
    """The source archive (fetched with pip when missing) and the cache file built from it."""
    archive = fetch_sdist()
    path = cache_file()
    read_cache(path if path.is_file() else build_cache())
    return [archive, path]


@lru_cache(maxsize=1)
def rated_sentences() -> dict[str, tuple[list[str], torch.Tensor]]:
    """{domain: (sentences, labels)} for the sentences with |rating| >= 0.5; label 1 = positive."""
    path = cache_file()
    found = read_cache(path if path.is_file() else build_cache())
    rated = {}
    for domain, (text, rating) in found.items():
        kept = np.abs(rating) >= MIN_RATING
        rated[domain] = ([str(s) for s in text[kept]], torch.as_tensor(rating[kept] > 0, dtype=torch.long))
    return rated


# --- tokens, splits and domains -----------------------------------------------------------------

def token_ids(sentences: list[str]) -> torch.Tensor:
    """int32 (N, 80): each sentence's token ids, cut at 80, then padded with 0."""
    from cema_cli.models.wordvec import tokenizer

    encoded = tokenizer().encode_batch(sentences, add_special_tokens=False)
    ids = torch.zeros(len(sentences), MAX_TOKENS, dtype=torch.int32)
    for row, encoding in zip(ids, encoded):
        kept = encoding.ids[:MAX_TOKENS]
        row[: len(kept)] = torch.as_tensor(kept, dtype=torch.int32)
    return ids


@lru_cache(maxsize=1)
def movie_split() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) positions among the rated movie sentences: per class a seeded shuffle, the
    first TRAIN_COUNT (in proportion to the class) train."""
    _, labels = rated_sentences()["movies"]
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    train, test = [], []
    for c in range(len(CLASSES)):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        take = round(TRAIN_COUNT * len(members) / len(labels))
        train.append(members[:take])
        test.append(members[take:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def split_sentences(name: str) -> tuple[list[str], torch.Tensor]:
    """The sentences and labels of ``train``, ``none`` (held-out movies) or a natural domain."""
    if name in ("train", "none"):
        sentences, labels = rated_sentences()["movies"]
        positions = movie_split()[0 if name == "train" else 1]
        return [sentences[i] for i in positions.tolist()], labels[positions]
    return rated_sentences()[name]


@lru_cache(maxsize=6)
def split(name: str) -> Domain:
    sentences, labels = split_sentences(name)
    return token_ids(sentences), labels


class SentimentDataset(InMemoryDataset):
    """Sentence polarity, trained on movie reviews; the natural shifts, then text shifts."""

    name = "sentiment"
    modality = "text"
    num_classes = len(CLASSES)
    preset = "cifar10"  # small models and few classes: the published CIFAR-10 settings (Adam, margin 0.4)
    default_edge, default_cloud = "sentiment-edge", "sentiment-foundation"
    native_encoding = "tokens"  # 2 bytes per token id, padding not sent
    encodings = ("tokens",)
    natural = ("tweets", "amazon", "nyt")
    shifts = TEXT_SHIFTS
    shift_recipe = "text-1"

    def compute_domain(self, corruption: str, severity: int) -> Domain:
        if corruption in self.shifts:
            sentences, labels = split_sentences("none")
            return token_ids(shift_sentences(sentences, corruption, severity, self.corruption_seed)), labels
        return split(corruption)

    def clean_samples(self, count: int, seed: int = 0) -> torch.Tensor:
        samples, _ = split("train")
        return samples[seeded_pick(count, len(samples), seed)]
