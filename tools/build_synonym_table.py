"""Build cema_cli/corruptions/synonyms.json.gz, the synonym table of the ``synonyms`` text shift.

Reads WordNet 3.0 as Debian's ``wordnet-base`` package installs it (``apt-get install
wordnet-base``: /usr/share/wordnet) and the movie sentences of the sentiment dataset (run
``cema prepare`` first). For every word of those sentences that is not a stop word, the table
lists its single-word WordNet synonyms: the lemmas of every synset of every part of speech that
the word's base forms belong to, found as WordNet's morphy finds them (exception lists, then
the detachment rules). That is EDA's synonym replacement (Wei and Zou, EMNLP 2019), restricted to
one-word synonyms so that a swap replaces one word by one word.

    PYTHONPATH=$PWD python tools/build_synonym_table.py [/usr/share/wordnet]

The output is deterministic (sorted keys and lists, gzip without a timestamp). WordNet's licence
travels with it (cema_cli/corruptions/WORDNET-LICENSE).
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

POS = ("noun", "verb", "adj", "adv")
# morph.c's detachment rules: (suffix, ending) per part of speech.
RULES = {
    "noun": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")),
    "verb": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}
# EDA's stop words (eda.py): never replaced.
STOP_WORDS = frozenset("""i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom this that these those am is are was
were be been being have has had having do does did doing a an the and but if or because as until while of at by for with
about against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so than
too very s t can will just don should now""".split())
WORD = re.compile(r"[A-Za-z]+")


def read_index(folder: Path, pos: str) -> dict[str, list[int]]:
    """lemma -> synset offsets of one part of speech (index.<pos>; licence lines start with spaces)."""
    found = {}
    for line in (folder / f"index.{pos}").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        fields = line.split()
        synsets = int(fields[2])
        found[fields[0]] = [int(offset) for offset in fields[-synsets:]]
    return found


def read_synset_words(folder: Path, pos: str, offsets: set[int]) -> dict[int, list[str]]:
    """offset -> the synset's words (data.<pos>; adjective markers like "(a)" removed)."""
    words = {}
    with open(folder / f"data.{pos}", "rb") as data:
        for offset in sorted(offsets):
            data.seek(offset)
            fields = data.readline().decode("latin-1").split()
            count = int(fields[3], 16)
            words[offset] = [re.sub(r"\(.*\)$", "", fields[4 + 2 * k]).lower() for k in range(count)]
    return words


def read_exceptions(folder: Path, pos: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (folder / f"{pos}.exc").read_text(encoding="latin-1").splitlines():
        inflected, *bases = line.split()
        found.setdefault(inflected, []).extend(bases)
    return found


def base_forms(word: str, index: dict[str, list[int]], exceptions: dict[str, list[str]], pos: str) -> list[str]:
    """WordNet's morphy: the word itself and its exception bases, else the detached forms, if indexed."""
    listed = [w for w in [word, *exceptions.get(word, [])] if w in index]
    if listed:
        return listed
    return [word[: -len(suffix)] + ending for suffix, ending in RULES[pos]
            if word.endswith(suffix) and word[: -len(suffix)] + ending in index]


def synonym_table(folder: Path, words: set[str]) -> dict[str, list[str]]:
    indexes = {pos: read_index(folder, pos) for pos in POS}
    exceptions = {pos: read_exceptions(folder, pos) for pos in POS}
    wanted = {pos: {w: base_forms(w, indexes[pos], exceptions[pos], pos) for w in words} for pos in POS}
    offsets = {pos: {o for bases in wanted[pos].values() for b in bases for o in indexes[pos][b]} for pos in POS}
    synsets = {pos: read_synset_words(folder, pos, offsets[pos]) for pos in POS}
    table = {}
    for word in sorted(words):
        synonyms = {lemma for pos in POS for base in wanted[pos][word] for o in indexes[pos][base] for lemma in synsets[pos][o]}
        synonyms = sorted(s for s in synonyms if WORD.fullmatch(s) and s != word)
        if synonyms:
            table[word] = synonyms
    return table


def corpus_words() -> set[str]:
    from cema_cli.data.sentiment import rated_sentences

    sentences, _ = rated_sentences()["movies"]
    return {w.lower() for s in sentences for w in WORD.findall(s)} - STOP_WORDS


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet")
    table = synonym_table(folder, corpus_words())
    out = Path(__file__).resolve().parents[1] / "cema_cli" / "corruptions" / "synonyms.json.gz"
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed:
        packed.write(json.dumps(table, sort_keys=True, separators=(",", ":")).encode())
    print(f"{len(table)} words with synonyms -> {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
