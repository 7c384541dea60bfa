"""Subword tokenizer trained with Google's SentencePiece library (BPE or unigram LM).

SentencePiece (Kudo & Richardson, 2018) learns a vocabulary of subword pieces directly from raw
text, treating the space as an ordinary symbol written "▁" (U+2581). minillm trains it so that
``decode(encode(text)) == text`` exactly, for any text:

- ``normalization_rule_name="identity"``: no NFKC folding (which would turn "ｆ" into "f").
- ``remove_extra_whitespaces=False`` and ``add_dummy_prefix=False``: keep every space as it is
  and do not invent a leading one. ``allow_whitespace_only_pieces=True`` lets runs of spaces
  (indentation) become pieces of their own.
- The trainer is fed the corpus one line per sentence, so it never sees a newline;
  ``"\\n"`` is therefore a user-defined symbol (always its own token, and readable as a piece).
- ``byte_fallback=True``: a character missing from the vocabulary becomes its UTF-8 bytes
  (256 pieces ``<0x00>`` .. ``<0xFF>``), so nothing is ever ``<unk>``.

The ids are laid out as: 0 ``<unk>``, 1 ``<|endoftext|>`` (a control symbol: ``eos_id`` and
``bos_id``), 2 ``"\\n"``, then the 256 byte pieces (with byte fallback), then the learned pieces.
The one character that cannot round-trip is "▁" itself (it decodes as a space), so ``encode``
rejects it.

The trained model stays in memory as its serialized protobuf bytes and is saved beside
``tokenizer.json`` as ``tokenizer.model``, loadable by any SentencePiece tool.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Iterable

import sentencepiece as spm

from minillm.checkpoints.atomic import write_file
from minillm.errors import TokenizerError
from minillm.tokenizers.base import (
    EOT_TOKEN,
    TextOrPaths,
    Tokenizer,
    read_texts,
    unknown_chars_error,
)

MODEL_FILE = "tokenizer.model"
MODEL_TYPES = ("bpe", "unigram")
SPACE_SYMBOL = "\u2581"  # "▁": SentencePiece's stand-in for " "


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, model_type: str = "unknown"):
        self.model_proto = bytes(model_proto)
        self.model_type = model_type
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except Exception as e:  # a RuntimeError or a protobuf parse error, depending on the build
            raise TokenizerError(f"not a valid SentencePiece model ({e}).") from None
        sp = self._sp
        eos = sp.piece_to_id(EOT_TOKEN)  # unknown pieces map to the unk id, so check the piece
        if sp.id_to_piece(eos) != EOT_TOKEN:
            eos = sp.eos_id()  # a model trained elsewhere: use its own end-of-sentence id
            if eos < 0:
                raise TokenizerError(
                    f"this SentencePiece model has neither {EOT_TOKEN!r} nor an eos piece."
                )
        self.eos_id = eos
        self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else eos
        self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else None
        self._unk_id = sp.unk_id()

    # -- training ----------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        text_or_paths: TextOrPaths,
        vocab_size: int = 2048,
        model_type: str = "bpe",
        byte_fallback: bool = True,
        character_coverage: float = 0.9995,
        seed: int = 0,
        num_threads: int = 4,
        max_sentence_length: int = 1 << 16,
    ) -> "SentencePieceTokenizer":
        """Train a tokenizer on a text (a ``str``) or on UTF-8 files (a path or list of paths).

        ``character_coverage`` is the fraction of the corpus's characters that get pieces of their
        own; the rarest rest fall back to bytes. Training is deterministic: the same text and
        options give a byte-identical model (the library's RNG is seeded with ``seed``, and
        ``num_threads`` is a fixed number, not the machine's core count, because it is recorded
        in the model).
        """
        if model_type not in MODEL_TYPES:
            raise TokenizerError(
                f"unknown SentencePiece model type {model_type!r}; choose one of {MODEL_TYPES}."
            )
        text = read_texts(text_or_paths)
        if not text.strip():
            raise TokenizerError("cannot train a SentencePiece tokenizer on empty text.")
        if SPACE_SYMBOL in text:
            raise unknown_chars_error([SPACE_SYMBOL], "sentencepiece", _SPACE_HINT)
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                # One sentence per line, fed from memory: no temporary file, whose random name
                # would be recorded in the model and make two identical runs differ byte-wise.
                sentence_iterator=iter(text.split("\n")),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                byte_fallback=byte_fallback,
                character_coverage=character_coverage,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                split_by_whitespace=True,
                split_digits=False,
                user_defined_symbols=["\n"],
                unk_id=0,
                eos_id=1,
                eos_piece=EOT_TOKEN,
                bos_id=-1,
                pad_id=-1,
                max_sentence_length=max_sentence_length,
                num_threads=num_threads,
                minloglevel=2,  # errors only; training progress is not the library's to print
            )
        except RuntimeError as e:
            raise _training_error(str(e), vocab_size, model_type) from None
        return cls(model.getvalue(), model_type=model_type)

    @classmethod
    def from_model_file(cls, path: str | os.PathLike) -> "SentencePieceTokenizer":
        """Wrap an existing ``.model`` file (trained by minillm or by any SentencePiece tool)."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"SentencePiece model {path} does not exist.")
        return cls(path.read_bytes())

    # -- the interface -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def name(self) -> str:
        return f"sentencepiece {self.model_type} ({self.vocab_size} pieces)"

    def encode(self, text: str) -> list[int]:
        if SPACE_SYMBOL in text:
            raise unknown_chars_error([SPACE_SYMBOL], "sentencepiece", _SPACE_HINT)
        ids = self._sp.encode(text)
        if self._unk_id in ids:
            # Only without byte fallback: every vocabulary character is a piece of its own, so
            # the characters that look up to <unk> are exactly the ones that cannot be encoded.
            unk = self._unk_id
            bad = [c for c in dict.fromkeys(text) if c != " " and self._sp.piece_to_id(c) == unk]
            raise unknown_chars_error(bad, "sentencepiece", "train it with byte_fallback=True")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode(self._check_ids(ids))  # control ids (eos) decode to ""

    def id_to_piece(self, i: int) -> str:
        """The piece string of one id (for inspecting the vocabulary)."""
        return self._sp.id_to_piece(self._check_ids([i])[0])

    # -- persistence -------------------------------------------------------------------------
    def _save_data(self, directory: Path) -> dict[str, Any]:
        write_file(directory / MODEL_FILE, self.model_proto)
        return {
            "model_file": MODEL_FILE,
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "sha256": hashlib.sha256(self.model_proto).hexdigest(),
        }

    @classmethod
    def _from_data(cls, data: dict[str, Any], directory: Path) -> "SentencePieceTokenizer":
        name = data.get("model_file", MODEL_FILE)
        if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name:
            # a file from elsewhere names only a file beside it, never a path out of its folder
            raise TokenizerError(f"tokenizer.json in {directory} names model_file {name!r}, which "
                                 f"is not a plain file name in that folder.")
        path = directory / name
        if not path.is_file():
            raise TokenizerError(f"the SentencePiece model file {path} is missing.")
        proto = path.read_bytes()
        if "sha256" in data and hashlib.sha256(proto).hexdigest() != data["sha256"]:
            raise TokenizerError(f"{path} is corrupt (its sha256 does not match tokenizer.json).")
        return cls(proto, model_type=str(data.get("model_type", "unknown")))


_SPACE_HINT = "SentencePiece uses U+2581 to stand for a space, so it cannot round-trip"
# The trainer's C++ checks fail with "INTERNAL: src/x.cc(N) [condition] message"; keep the message.
_CHECK_PREFIX = re.compile(r"^.*?\] ", re.DOTALL)


def _training_error(message: str, vocab_size: int, model_type: str) -> TokenizerError:
    """A one-sentence TokenizerError for a failed SentencePiece training run."""
    too_high = re.search(r"Vocabulary size too high .*? <= (\d+)", message)
    if too_high:
        return TokenizerError(
            f"vocab_size {vocab_size} is too large for this corpus: the {model_type} trainer can "
            f"build at most {too_high.group(1)} pieces from it; pick a smaller --vocab-size."
        )
    if "Vocabulary size too high" in message:
        return TokenizerError(
            f"vocab_size {vocab_size} is too large for this corpus; pick a smaller --vocab-size."
        )
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_low:
        return TokenizerError(
            f"vocab_size {vocab_size} is too small for this corpus: it needs at least "
            f"{too_low.group(1)} ids (special tokens, byte pieces and every character kept); "
            "pick a larger --vocab-size."
        )
    if "sentences_.empty()" in message:
        return TokenizerError(
            "SentencePiece found no usable training lines: every line is empty or longer than "
            "max_sentence_length bytes; break the corpus into lines."
        )
    detail = _CHECK_PREFIX.sub("", message, count=1).strip()
    if not detail:
        return TokenizerError(f"SentencePiece could not train a tokenizer with vocab_size "
                              f"{vocab_size} on this corpus (it gave no reason).")
    return TokenizerError(f"SentencePiece could not train a tokenizer: {detail}")
