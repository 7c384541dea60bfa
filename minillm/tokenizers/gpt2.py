"""GPT-2's byte-level BPE tokenizer (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners", section 2.2), loaded from a Hugging Face GPT-2 directory.

Encoding (special strings, pre-tokenisation with GPT-2's pattern, bytes to symbols, merges by
rank) is minillm.tokenizers.bpe's ByteLevelBPETokenizer, which this class specialises to GPT-2's
files: vocab.json (token -> id) and merges.txt (one merge per line, by rank).

Special token: "<|endoftext|>" (id 50256 in GPT-2, read from vocab.json) is eos_id and bos_id.
Following minillm's Tokenizer convention, plain `encode(text)` treats the characters
"<|endoftext|>" in text as ordinary text and `decode` renders the special id as "".
`encode(text, allowed_special="all")` gives Hugging Face's GPT2Tokenizer behaviour, where the
literal string becomes the special id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from minillm.checkpoints.atomic import write_file
from minillm.errors import TokenizerError
from minillm.tokenizers.base import EOT_TOKEN
from minillm.tokenizers.bpe import (  # noqa: F401  (BYTE_TO_UNICODE, pretokenize: re-exported)
    BYTE_TO_UNICODE,
    ByteLevelBPETokenizer,
    bpe_merge,
    pretokenize,
)

VOCAB_NAME = "vocab.json"
MERGES_NAME = "merges.txt"


# --- the tokenizer ----------------------------------------------------------------------------


def _read_vocab(path: Path) -> dict[str, int]:
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"the GPT-2 tokenizer file {path} is missing.") from None
    except (OSError, ValueError) as e:
        raise TokenizerError(f"the GPT-2 vocabulary {path} is not readable JSON ({e}).") from None
    if not isinstance(vocab, dict) or not all(
        isinstance(t, str) and type(i) is int and i >= 0 for t, i in vocab.items()
    ):
        raise TokenizerError(f"the GPT-2 vocabulary {path} must map token strings to ids >= 0.")
    if EOT_TOKEN not in vocab:
        raise TokenizerError(f"the GPT-2 vocabulary {path} has no {EOT_TOKEN} token.")
    return vocab


def _read_merges(path: Path, vocab: dict[str, int]) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise TokenizerError(f"the GPT-2 tokenizer file {path} is missing.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"the GPT-2 merges file {path} is not readable ({e}).") from None
    merges = []
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        # Symbols never contain a space (BYTE_TO_UNICODE moved it to "Ġ"), so a merge line is
        # exactly two non-empty symbols; anything else means a damaged file.
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerError(
                f"the GPT-2 merges file {path} line {lineno} is not two symbols split by one"
                f" space: {line!r}."
            )
        # As in Hugging Face's tokenizers: a merge whose result has no id could never be encoded.
        if parts[0] + parts[1] not in vocab:
            raise TokenizerError(
                f"the GPT-2 merges file {path} line {lineno} makes {parts[0] + parts[1]!r},"
                " which is not in vocab.json."
            )
        merges.append((parts[0], parts[1]))
    return merges


class GPT2Tokenizer(ByteLevelBPETokenizer):
    """Byte-level BPE with GPT-2's vocab.json + merges.txt (the shared machinery is
    minillm.tokenizers.bpe). Round-trips any str that is valid Unicode (no lone surrogates)
    exactly: decode(encode(text)) == text."""

    kind = "gpt2"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        if EOT_TOKEN not in vocab:
            raise TokenizerError(f"a GPT-2 vocabulary needs a {EOT_TOKEN} token.")
        eot = vocab[EOT_TOKEN]
        # one boundary token for both ends; parsed from text only when asked (allowed_special)
        super().__init__(vocab, merges, pre="gpt2", special={EOT_TOKEN: eot}, control=[eot],
                         eos_id=eot, bos_id=eot, parse_special=False)

    # -- loading and saving ------------------------------------------------------------------
    @classmethod
    def from_files(
        cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike
    ) -> GPT2Tokenizer:
        vocab = _read_vocab(Path(vocab_json))
        return cls(vocab, _read_merges(Path(merges_txt), vocab))

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> GPT2Tokenizer:
        """Load a Hugging Face GPT-2 directory (only its vocab.json and merges.txt are read)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise TokenizerError(f"the GPT-2 tokenizer directory {directory} does not exist.")
        for name in (VOCAB_NAME, MERGES_NAME):
            if not (directory / name).is_file():
                raise TokenizerError(f"the GPT-2 tokenizer directory {directory} has no {name}.")
        return cls.from_files(directory / VOCAB_NAME, directory / MERGES_NAME)

    def _save_data(self, directory: Path) -> dict[str, Any]:
        # Hugging Face's layout, so the directory also loads with transformers' GPT2Tokenizer.
        vocab = json.dumps(self.vocab, ensure_ascii=False).encode("utf-8")
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        write_file(directory / VOCAB_NAME, vocab)
        write_file(directory / MERGES_NAME, merges.encode("utf-8"))
        return {"vocab": VOCAB_NAME, "merges": MERGES_NAME, "vocab_size": self.vocab_size}

    @classmethod
    def _from_data(cls, data: dict[str, Any], directory: Path) -> GPT2Tokenizer:
        vocab, merges = data.get("vocab", VOCAB_NAME), data.get("merges", MERGES_NAME)
        if not (isinstance(vocab, str) and isinstance(merges, str)):
            raise TokenizerError(f"the GPT-2 tokenizer.json in {directory} is corrupt.")
        return cls.from_files(directory / vocab, directory / merges)

    # -- the Tokenizer interface (encode and decode are ByteLevelBPETokenizer's) -------------
    @property
    def name(self) -> str:
        return f"gpt2 byte-level BPE ({len(self._ranks)} merges)"
