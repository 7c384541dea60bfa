"""The interface every minillm tokenizer implements.

A tokenizer maps text to a list of integer token ids and back. Models only ever see the ids, so
the tokenizer is saved next to the prepared data and the checkpoint: a directory holding
``tokenizer.json`` (``{"kind": ..., "format": 1, "data": {...}}``) plus any model file the kind
needs (SentencePiece keeps its binary ``tokenizer.model`` beside it).

The tokenizers minillm trains and GPT-2's have exactly one special token, ``"<|endoftext|>"``
(the GPT-2 spelling), whose id is ``eos_id``. It marks the end of a document; ``bos_id`` may be
the same id (as in GPT-2), and ``pad_id`` is ``None`` unless the kind has a real padding token.
Their ordinary ``encode`` never emits a special id: text that happens to contain the characters
``<|endoftext|>`` is encoded as those characters, and callers append ``eos_id`` themselves.
Tokenizers read from a model file (GGUF: ``bpe``, ``gguf_spm``) keep that model's own special
tokens (``<|im_start|>``, ``<|im_end|>``, ...) and parse them in the text by default, as the chat
prompts rendered from the model's template need; ``encode(text, allowed_special=())`` turns that
off. Every kind's ``decode`` renders control tokens as the empty string, so stopping at
end-of-text is the caller's job (the sampler checks ids, not strings).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence, Union

from minillm.checkpoints.atomic import write_file
from minillm.errors import TokenizerError
from minillm.tokenizers.encoding import encode_batch

EOT_TOKEN = "<|endoftext|>"
CONFIG_NAME = "tokenizer.json"
FORMAT_VERSION = 1

# What train_tokenizer and the tokenizers' train() accept: the text itself, or files to read.
TextOrPaths = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


class Tokenizer(ABC):
    """Abstract base: text <-> token ids, plus save/load through ``tokenizer.json``."""

    kind: ClassVar[str]  # the key in tokenizer.json and in minillm.tokenizers.TOKENIZERS
    eos_id: int
    bos_id: int
    pad_id: int | None = None
    # True where decode_bytes(a + b) == decode_bytes(a) + decode_bytes(b): generated text can
    # then grow by each new token's bytes instead of decoding every token again
    bytes_join: ClassVar[bool] = False

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids; every id is in ``range(vocab_size)``."""

    @property
    def name(self) -> str:
        """A short human-readable description (the kind, refined by subclasses)."""
        return self.kind

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; raises TokenizerError naming characters it cannot encode."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text for ``ids``; special ids decode to ""."""

    # -- Hugging Face's spellings ------------------------------------------------------------
    padding_side = "left"  # where ``__call__`` pads; left is what batched generation needs

    def __call__(self, text, return_tensors=None, padding=False, truncation=False,
                 max_length=None, padding_side=None):
        """``tok("text")`` or ``tok(["a", "b"], padding=True, return_tensors="np")``: a
        dict-like ``BatchEncoding`` with ``input_ids`` and ``attention_mask``, as Hugging
        Face's tokenizers return (see ``minillm.tokenizers.encoding``)."""
        return encode_batch(self, text, return_tensors=return_tensors, padding=padding,
                            truncation=truncation, max_length=max_length,
                            padding_side=padding_side)

    def batch_decode(self, sequences) -> list[str]:
        """The text of each row of ``sequences`` (lists of ids, or a (B, T) array)."""
        return [self.decode(row) for row in sequences]

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eos_token_id(self) -> int:
        return self.eos_id

    @property
    def bos_token_id(self) -> int:
        return self.bos_id

    @property
    def pad_token_id(self) -> int | None:
        return self.pad_id

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """``save`` under Hugging Face's name (minillm's tokenizer.json, not Hugging Face's);
        ``minillm.tokenizers.load_tokenizer(directory)`` reads it back."""
        return self.save(directory)

    # -- persistence -------------------------------------------------------------------------
    @abstractmethod
    def _save_data(self, directory: Path) -> dict[str, Any]:
        """Write any extra files into ``directory``; return the JSON-able ``data`` section."""

    @classmethod
    @abstractmethod
    def _from_data(cls, data: dict[str, Any], directory: Path) -> "Tokenizer":
        """Rebuild the tokenizer from the ``data`` section written by ``_save_data``."""

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` (and any model file) into ``directory``; return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Model files first, the json last: a directory with a tokenizer.json is complete.
        data = self._save_data(directory)
        config = {"kind": self.kind, "format": FORMAT_VERSION, "data": data}
        path = directory / CONFIG_NAME
        write_file(path, (json.dumps(config, indent=1) + "\n").encode("utf-8"))
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"

    # -- helpers for subclasses --------------------------------------------------------------
    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        """ids as plain ints, each checked to lie inside the vocabulary."""
        out = [int(i) for i in ids]
        V = self.vocab_size
        for i in out:
            if not 0 <= i < V:
                raise TokenizerError(
                    f"token id {i} is outside this tokenizer's vocabulary (0..{V - 1})."
                )
        return out


def unknown_chars_error(
    chars: Iterable[str],
    who: str,
    hint: str = "train the tokenizer on a corpus that contains them",
) -> TokenizerError:
    """The one error message for text with characters a tokenizer cannot encode."""
    seen: list[str] = []
    for c in chars:  # first few distinct offenders, in order of first appearance
        if c not in seen:
            seen.append(c)
    shown = ", ".join(repr(c) for c in seen[:5]) + (", ..." if len(seen) > 5 else "")
    return TokenizerError(
        f"the text has {len(seen)} character(s) the {who} tokenizer cannot encode ({shown}); "
        f"{hint}."
    )


def read_texts(text_or_paths: TextOrPaths) -> str:
    """A ``str`` is the text; a path or list of paths names UTF-8 files, joined by "\\n"."""
    if isinstance(text_or_paths, str):
        return text_or_paths
    paths = [text_or_paths] if isinstance(text_or_paths, os.PathLike) else list(text_or_paths)
    parts = []
    for p in map(Path, paths):
        if not p.is_file():
            raise TokenizerError(f"tokenizer training file {p} does not exist.")
        raw = p.read_bytes()
        try:
            parts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise TokenizerError(
                f"tokenizer training file {p} is not UTF-8 text (bad byte at offset {e.start})."
            ) from None
    return "\n".join(parts)
