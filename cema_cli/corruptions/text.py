"""Text shifts of sentences, severities 1-5 (README, "Beyond images").

A sentence is split into words, spaces and punctuation; each shift visits its words (or
punctuation) in order and changes each with the severity's probability p. Sentence i's draws
come from a ``random.Random`` seeded by (seed, shift, severity, i), and only its ``random()`` is
used (stable across Python versions), so a sentence's shift does not depend on batching. The
probabilities were calibrated as ImageNet-C's constants were: the source edge model's accuracy
falls at every step from severity 1 to 5 (README table).

- ``typos``: character noise on words of 2+ letters: a swap of two neighbouring letters, a
  deletion, an insertion or a substitution by a neighbour key on a QWERTY keyboard (one of the
  four, equally likely).
- ``synonyms``: WordNet synonym swaps (EDA's synonym replacement, Wei and Zou 2019): a word that
  has single-word WordNet 3.0 synonyms becomes one of them, drawn uniformly; stop words never
  change. The table ships with cema (synonyms.json.gz, built by tools/build_synonym_table.py from
  Debian's wordnet-base; WordNet's licence in WORDNET-LICENSE).
- ``casing``: casing and punctuation noise: a word turns UPPER, lower or Title case; a
  punctuation mark is dropped, and after a word, with p / 2, one of ``! ? . , ...`` is added.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

TEXT_SHIFTS: tuple[str, ...] = ("typos", "synonyms", "casing")

TYPOS = (0.05, 0.1, 0.2, 0.3, 0.45)
SYNONYMS = (0.1, 0.2, 0.35, 0.5, 0.7)
CASING = (0.1, 0.2, 0.3, 0.45, 0.6)

SYNONYM_TABLE = Path(__file__).with_name("synonyms.json.gz")
PIECES = re.compile(r"[A-Za-z]+|\s+|[^A-Za-z\s]")
LETTERS = re.compile(r"[A-Za-z]+")
PUNCTUATION = re.compile(r"[^\w\s]")
ADDED_MARKS = ("!", "?", ".", ",", "...")
KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def sentence_random(seed: int, name: str, severity: int, index: int) -> random.Random:
    digest = hashlib.blake2b(f"{seed}/text/{name}/{severity}/{index}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def pick(rng: random.Random, options) -> object:
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def neighbours(letter: str) -> str:
    """The keys left, right, above and below ``letter`` on a QWERTY keyboard, in its case."""
    low = letter.lower()
    row = next(r for r, keys in enumerate(KEYBOARD) if low in keys)
    col = KEYBOARD[row].index(low)
    near = [KEYBOARD[r][c] for r, c in ((row, col - 1), (row, col + 1), (row - 1, col), (row + 1, col))
            if 0 <= r < 3 and 0 <= c < len(KEYBOARD[r])]
    return "".join(near).upper() if letter.isupper() else "".join(near)


def typo(word: str, rng: random.Random) -> str:
    """One of: swap two neighbouring letters, delete, insert a neighbour key, substitute by one."""
    kind = pick(rng, ("swap", "delete", "insert", "substitute"))
    at = int(rng.random() * len(word))
    if kind == "swap":
        at = min(at, len(word) - 2)
        return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    if kind == "delete":
        return word[:at] + word[at + 1 :]
    key = pick(rng, neighbours(word[at]))
    return word[:at] + key + word[at + (kind == "substitute") :]


def with_case_of(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    return replacement[:1].upper() + replacement[1:] if original[:1].isupper() else replacement


@lru_cache(maxsize=1)
def synonym_table() -> dict[str, list[str]]:
    with gzip.open(SYNONYM_TABLE, "rt", encoding="utf-8") as packed:
        return json.load(packed)


def typos(pieces: list[str], p: float, rng: random.Random) -> list[str]:
    return [typo(w, rng) if LETTERS.fullmatch(w) and len(w) >= 2 and rng.random() < p else w for w in pieces]


def synonyms(pieces: list[str], p: float, rng: random.Random) -> list[str]:
    table = synonym_table()
    out = []
    for w in pieces:
        options = table.get(w.lower()) if LETTERS.fullmatch(w) else None
        out.append(with_case_of(w, pick(rng, options)) if options and rng.random() < p else w)
    return out


def casing(pieces: list[str], p: float, rng: random.Random) -> list[str]:
    out = []
    for w in pieces:
        if PUNCTUATION.fullmatch(w):
            out.append("" if rng.random() < p else w)
        elif LETTERS.fullmatch(w):
            out.append(pick(rng, (str.upper, str.lower, str.title))(w) if rng.random() < p else w)
            out.append(pick(rng, ADDED_MARKS) if rng.random() < p / 2 else "")
        else:
            out.append(w)
    return out


SHIFTS: dict[str, Callable[[list[str], float, random.Random], list[str]]] = {"typos": typos, "synonyms": synonyms, "casing": casing}


def probability(name: str, severity: int) -> float:
    return {"typos": TYPOS, "synonyms": SYNONYMS, "casing": CASING}[name][severity - 1]


def shift_sentence(sentence: str, name: str, severity: int, rng: random.Random) -> str:
    return "".join(SHIFTS[name](PIECES.findall(sentence), probability(name, severity), rng))


def shift_sentences(sentences: list[str], name: str, severity: int, seed: int) -> list[str]:
    """Shift ``name`` at ``severity`` on every sentence; sentence i's draws depend on (seed, i) only."""
    return [shift_sentence(s, name, severity, sentence_random(seed, name, severity, i)) for i, s in enumerate(sentences)]
