"""Character-level tokenizer: one token per Unicode character (nanoGPT's shakespeare_char).

The vocabulary is the sorted set of characters in the training corpus (sorted by code point, so
it is the same on every machine), followed by one special token ``"<|endoftext|>"``. Tiny
Shakespeare has 65 distinct characters, so its vocabulary has 66 ids and ``eos_id == 65``.

Choices:
- ``eos_id == bos_id`` (the single special token); ``pad_id`` is None.
- ``decode`` renders the special id as "" (stopping at end-of-text is the caller's job), so
  ``decode(encode(text)) == text`` for any text made of vocabulary characters.
- Characters outside the vocabulary are an error, never silently dropped or mapped to <unk>.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from minillm.errors import TokenizerError
from minillm.tokenizers.base import (
    EOT_TOKEN,
    TextOrPaths,
    Tokenizer,
    read_texts,
    unknown_chars_error,
)


def _codepoints(text: str) -> np.ndarray:
    """(N,) uint32 code points of ``text``; UTF-32 is a fixed 4 bytes per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if not chars:
            raise TokenizerError("a char tokenizer needs at least one character in its vocabulary.")
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise TokenizerError(
                "a char tokenizer's vocabulary must be distinct single characters."
            )
        self.chars = sorted(chars)
        # Ids 0..n-1 are the characters in code-point order; id n is <|endoftext|>.
        self._table = _codepoints("".join(self.chars))  # (n,) sorted, for searchsorted
        self.eos_id = self.bos_id = len(self.chars)
        self.pad_id = None
        self._itos = self.chars + [""]  # the special decodes to ""

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The tokenizer whose vocabulary is every distinct character of ``text``."""
        if not text:
            raise TokenizerError("cannot build a char tokenizer from empty text.")
        return cls(set(text))

    @classmethod
    def train(
        cls, text_or_paths: TextOrPaths, vocab_size: int | None = None, **_ignored
    ) -> "CharTokenizer":
        """Same as ``from_text``; ``vocab_size`` is ignored (the corpus decides it)."""
        return cls.from_text(read_texts(text_or_paths))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def name(self) -> str:
        return f"char ({len(self.chars)} characters + {EOT_TOKEN})"

    def encode(self, text: str) -> list[int]:
        cps = _codepoints(text)  # (N,)
        ids = np.searchsorted(self._table, cps)  # (N,) position each code point would take
        ids_clipped = np.minimum(ids, len(self._table) - 1)
        bad = self._table[ids_clipped] != cps  # not actually in the table
        if bad.any():
            # Distinct offenders, in order of first appearance in the text.
            offenders, first = np.unique(cps[bad], return_index=True)
            raise unknown_chars_error((chr(c) for c in offenders[np.argsort(first)]), "char")
        return ids.tolist()

    def decode(self, ids: Iterable[int]) -> str:
        itos = self._itos
        return "".join([itos[i] for i in self._check_ids(ids)])

    def _save_data(self, directory: Path) -> dict[str, Any]:
        # json escapes every non-ASCII character, so the file is plain ASCII on every platform.
        return {"chars": self.chars}

    @classmethod
    def _from_data(cls, data: dict[str, Any], directory: Path) -> "CharTokenizer":
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise TokenizerError(
                f"the char tokenizer in {directory} is corrupt (no character list)."
            )
        return cls(chars)
