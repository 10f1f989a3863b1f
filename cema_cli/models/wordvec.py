"""wordllama 0.4.0.post1's token embeddings and tokenizer (MIT), read from the files in its wheel.

``wordllama/weights/l2_supercat_256.safetensors`` holds 256-d static vectors for the 32,000
tokens of Llama 2's tokenizer (``wordllama/tokenizers/l2_supercat_tokenizer_config.json``); its
first 64 dimensions are the model's own 64-d (Matryoshka) embedding. cema reads both files
directly (``WordLlama.load`` would look for them the same way, but falls back to the Hugging Face
hub when they are missing) and checks their sha256: nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

from cema_cli.errors import CemaError

PACKAGE = "wordllama"
INSTALL = "pip install 'wordllama==0.4.0.post1'"
FILES = {
    "weights/l2_supercat_256.safetensors": "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
    "tokenizers/l2_supercat_tokenizer_config.json": "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
}
WEIGHTS, TOKENIZER = FILES
TENSOR_KEY = "embedding.weight"
VOCABULARY = 32000


def package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise CemaError(f"the sentiment models start from wordllama's token embeddings, but wordllama is not installed; {INSTALL}.")
    return Path(spec.origin).parent


@lru_cache(maxsize=2)
def checked_file(relative: str) -> Path:
    """A wordllama file, present and byte-identical to 0.4.0.post1's."""
    path = package_dir() / relative
    if not path.is_file():
        raise CemaError(f"wordllama's {relative} is missing ({path}); reinstall it: {INSTALL}.")
    if hashlib.sha256(path.read_bytes()).hexdigest() != FILES[relative]:
        raise CemaError(f"{path} is not wordllama 0.4.0.post1's file (sha256 differs); reinstall it: {INSTALL}.")
    return path


@lru_cache(maxsize=1)
def tokenizer():
    """Llama 2's tokenizer as wordllama ships it (no padding, no truncation: cema pads itself)."""
    from tokenizers import Tokenizer

    found = Tokenizer.from_file(str(checked_file(TOKENIZER)))
    found.no_padding()
    found.no_truncation()
    return found


@lru_cache(maxsize=1)
def full_table() -> torch.Tensor:
    """float16 (32,000, 256) token vectors, as stored."""
    from safetensors import safe_open

    with safe_open(str(checked_file(WEIGHTS)), framework="pt") as weights:
        table = weights.get_tensor(TENSOR_KEY)
    if tuple(table.shape) != (VOCABULARY, 256):
        raise CemaError(f"wordllama's {WEIGHTS} holds {tuple(table.shape)} vectors, not ({VOCABULARY}, 256); reinstall it: {INSTALL}.")
    return table


def embedding_table(dim: int) -> torch.Tensor:
    """The first ``dim`` dimensions of every token vector (64 is wordllama's own 64-d model), float16."""
    return full_table()[:, :dim].clone()
