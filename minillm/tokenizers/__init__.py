"""Tokenizers: text <-> token ids.

Every kind implements ``minillm.tokenizers.base.Tokenizer`` and is registered in ``TOKENIZERS``
under the ``kind`` string that its ``tokenizer.json`` carries; ``load_tokenizer`` dispatches on it.
To add a kind, write a Tokenizer subclass and add one entry to ``TOKENIZERS``.

    tok = train_tokenizer("sentencepiece", text, vocab_size=2048, model_type="bpe")
    tok.save("data/shakespeare")
    tok = load_tokenizer("data/shakespeare")
    assert tok.decode(tok.encode(text)) == text
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from minillm.errors import TokenizerError
from minillm.tokenizers.base import CONFIG_NAME, EOT_TOKEN, TextOrPaths, Tokenizer
from minillm.tokenizers.bpe import ByteLevelBPETokenizer
from minillm.tokenizers.char import CharTokenizer
from minillm.tokenizers.gguf_spm import GGUFSentencePieceTokenizer
from minillm.tokenizers.gpt2 import GPT2Tokenizer
from minillm.tokenizers.sentencepiece import SentencePieceTokenizer

# kind -> class. A class listed here is loadable; it is trainable if it has a `train` classmethod.
TOKENIZERS: dict[str, type[Tokenizer]] = {
    CharTokenizer.kind: CharTokenizer,
    SentencePieceTokenizer.kind: SentencePieceTokenizer,
    GPT2Tokenizer.kind: GPT2Tokenizer,
    ByteLevelBPETokenizer.kind: ByteLevelBPETokenizer,
    GGUFSentencePieceTokenizer.kind: GGUFSentencePieceTokenizer,
}


def train_tokenizer(kind: str, text_or_paths: TextOrPaths, **options) -> Tokenizer:
    """Train a tokenizer of ``kind`` on a text (``str``) or on UTF-8 files (path or list of paths).

    ``options`` go to the kind's ``train``: for "sentencepiece" ``vocab_size``, ``model_type``
    ("bpe" | "unigram"), ``byte_fallback``, ``character_coverage``, ``seed``, ``num_threads``; the
    "char" kind takes its vocabulary from the corpus and ignores ``vocab_size``.
    """
    cls = TOKENIZERS.get(kind)
    if cls is None:
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; choose one of {sorted(TOKENIZERS)}."
        )
    train = getattr(cls, "train", None)
    if train is None:
        raise TokenizerError(f"the {kind!r} tokenizer is fixed and cannot be trained.")
    return train(text_or_paths, **options)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer saved in ``directory`` (by ``Tokenizer.save``), whatever its kind."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise TokenizerError(
            f"no tokenizer in {directory} ({CONFIG_NAME} is missing); "
            "run `minillm tokenizer` or `minillm prepare` first."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        kind, data = config["kind"], config["data"]
        if not isinstance(data, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise TokenizerError(f"{path} is corrupt; train or prepare the tokenizer again.") from None
    cls = TOKENIZERS.get(kind)
    if cls is None:
        raise TokenizerError(
            f"{path} names an unknown tokenizer kind {kind!r}; known: {sorted(TOKENIZERS)}."
        )
    return cls._from_data(data, directory)


__all__ = [
    "EOT_TOKEN",
    "TOKENIZERS",
    "ByteLevelBPETokenizer",
    "CharTokenizer",
    "GGUFSentencePieceTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "train_tokenizer",
]
