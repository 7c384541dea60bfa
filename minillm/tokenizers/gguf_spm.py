"""SentencePiece-style BPE from a GGUF vocabulary (``tokenizer.ggml.model = llama``: Llama 1/2,
TinyLlama, Mistral 7B v0.1 ...), in plain Python: the file has no SentencePiece model, only the
pieces, their scores and their types.

Encoding, as SentencePiece's BPE model (and llama.cpp's "spm" tokenizer) does it:

1. Spaces become "▁" (U+2581), and with ``add_space_prefix`` one "▁" is put in front of the
   text (and of each stretch of text after a special token), so that a word spells the same at
   the start of the text as in the middle.
2. The text is split into its characters; then, repeatedly, the adjacent pair whose
   concatenation is a piece with the highest score is merged (leftmost first on ties), until no
   adjacent pair spells a piece. Unlike GPT-2's BPE there is no merge list: the score of the
   merged piece ranks the merge.
3. A character that is no piece of its own becomes its UTF-8 bytes, as the byte pieces
   "<0x41>" ... (byte fallback), or the unknown piece when the vocabulary has none.

Decoding reverses it: "▁" -> " ", byte pieces -> their bytes, control pieces -> "", and the
space the prefix added is dropped again.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from minillm.errors import TokenizerError
from minillm.tokenizers.base import Tokenizer
from minillm.tokenizers.bpe import BYTE, CONTROL, NORMAL, USER_DEFINED, split_special

SPACE = "\u2581"
_SPACE_UTF8 = SPACE.encode("utf-8")


def spm_merge(chars: list[str], scores: dict[str, float]) -> list[str]:
    """Merge adjacent symbols by the score of the piece they spell, highest first (leftmost on
    ties), until no adjacent pair is a piece. Linked list + heap, as bpe.bpe_merge; a heap
    entry is stale when one of its two symbols has changed since it was pushed."""
    n = len(chars)
    if n < 2:
        return list(chars)
    sym = list(chars)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap = []

    def push(i, j):
        s = scores.get(sym[i] + sym[j])
        if s is not None:
            heapq.heappush(heap, (-s, i, sym[i], sym[j]))

    for i in range(n - 1):
        push(i, i + 1)
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i] if sym[i] is not None else n
        if j >= n or sym[i] != a or sym[j] != b:
            continue
        sym[i] = a + b
        sym[j] = None
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        if prv[i] >= 0:
            push(prv[i], i)
        if nxt[i] < n:
            push(i, nxt[i])
    return [s for s in sym if s is not None]


class GGUFSentencePieceTokenizer(Tokenizer):
    """Pieces (id order), scores and token types of a GGUF ``llama`` vocabulary."""

    kind = "gguf_spm"
    chat_template: str | None = None  # the model's Jinja chat template, saved alongside

    def __init__(self, tokens: Sequence[str], scores: Sequence[float],
                 token_types: Sequence[int] | None = None, *, bos_id: int | None = 1,
                 eos_id: int = 2, unk_id: int | None = 0, pad_id: int | None = None,
                 add_bos: bool = True, add_space_prefix: bool = True, parse_special: bool = True):
        n = len(tokens)
        types = list(token_types) if token_types is not None else [NORMAL] * n
        if not n or len(scores) != n or len(types) != n:
            raise TokenizerError(f"the vocabulary has {n} pieces, {len(scores)} scores and "
                                 f"{len(types)} token types; they must be equally many.")
        for name, i in (("eos", eos_id), ("bos", bos_id), ("pad", pad_id), ("unk", unk_id)):
            if i is not None and not 0 <= i < n:
                raise TokenizerError(f"the {name} token id {i} is outside the vocabulary "
                                     f"(0..{n - 1}).")
        self.tokens, self.scores, self.token_types = list(tokens), list(scores), types
        self.eos_id = int(eos_id)
        self.bos_id = self.eos_id if bos_id is None else int(bos_id)
        self.pad_id, self.unk_id = pad_id, unk_id
        self.add_bos, self.add_space_prefix = bool(add_bos), bool(add_space_prefix)
        self.parse_special = bool(parse_special)
        self.vocab: dict[str, int] = {}
        self._scores: dict[str, float] = {}  # pieces merging may produce (normal, user-defined)
        self._bytes: dict[int, int] = {}  # byte value -> id of its "<0xXX>" piece
        self.special: dict[str, int] = {}
        self._id_to_bytes: list[bytes] = []
        for i, (t, k) in enumerate(zip(self.tokens, types)):
            self.vocab.setdefault(t, i)
            if k == BYTE and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                try:
                    self._bytes.setdefault(int(t[3:5], 16), i)
                    self._id_to_bytes.append(bytes([int(t[3:5], 16)]))
                    continue
                except ValueError:
                    pass
            if k in (CONTROL, USER_DEFINED) and t:
                self.special.setdefault(t, i)
            if k in (NORMAL, USER_DEFINED) and self.vocab[t] == i:
                self._scores[t] = float(scores[i])
            self._id_to_bytes.append(b"" if k == CONTROL else t.encode("utf-8"))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def name(self) -> str:
        return f"sentencepiece BPE from GGUF ({len(self.tokens)} pieces)"

    def encode(self, text: str, allowed_special: str | Iterable[str] | None = None) -> list[int]:
        """Token ids for ``text`` (``allowed_special`` as in ByteLevelBPETokenizer.encode)."""
        if allowed_special is None:
            allowed_special = "all" if self.parse_special else ()
        allowed = list(self.special) if allowed_special == "all" else [
            s for s in allowed_special if s in self.special]
        ids: list[int] = [self.bos_id] if self.add_bos else []
        after_special = True  # the text's start counts as "after a special token"
        for piece, is_special in split_special(text, allowed):
            if is_special:
                ids.append(self.special[piece])
                after_special = True
                continue
            if self.add_space_prefix and after_special:
                piece = " " + piece
            after_special = False
            ids.extend(self._encode_text(piece))
        return ids

    def _encode_text(self, text: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise TokenizerError("the text is not valid Unicode (it has a lone "
                                 "surrogate).") from None
        out = []
        for s in spm_merge(list(text.replace(" ", SPACE)), self._scores):
            i = self.vocab.get(s)
            if i is not None and s in self._scores:
                out.append(i)
                continue
            if not self._bytes:  # no byte pieces: one unknown piece per character
                if self.unk_id is None:
                    raise TokenizerError(f"the vocabulary has no piece for {s!r}, no byte "
                                         "pieces and no unknown piece.")
                out.extend([self.unk_id] * len(s))
                continue
            for b in s.encode("utf-8"):  # byte fallback
                out.append(self._bytes.get(b, self.unk_id if self.unk_id is not None else 0))
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        out = bytearray()
        run = bytearray()  # text since the start or the last special token

        def flush():
            text = bytes(run).replace(_SPACE_UTF8, b" ")  # also "▁" spelled by byte pieces
            if self.add_space_prefix and text.startswith(b" "):
                text = text[1:]  # the space the encoder put in front
            out.extend(text)
            run.clear()

        for i in self._check_ids(ids):
            if self.token_types[i] == CONTROL or self.tokens[i] in self.special:
                flush()
                out.extend(self._id_to_bytes[i])
            else:
                run.extend(self._id_to_bytes[i])
        flush()
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- persistence -------------------------------------------------------------------------
    def _save_data(self, directory: Path) -> dict[str, Any]:
        return {"tokens": self.tokens, "scores": self.scores, "token_types": self.token_types,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "unk_id": self.unk_id,
                "pad_id": self.pad_id, "add_bos": self.add_bos,
                "add_space_prefix": self.add_space_prefix, "parse_special": self.parse_special,
                "chat_template": self.chat_template}

    @classmethod
    def _from_data(cls, data: dict[str, Any], directory: Path) -> GGUFSentencePieceTokenizer:
        try:
            options = {k: data[k] for k in ("bos_id", "eos_id", "unk_id", "pad_id", "add_bos",
                                            "add_space_prefix", "parse_special")}
            tokens, scores, types = data["tokens"], data["scores"], data["token_types"]
            if not (all(isinstance(t, str) for t in tokens)
                    and all(isinstance(s, (int, float)) for s in scores)
                    and all(type(k) is int for k in types)):
                raise TypeError
        except (KeyError, TypeError):
            raise TokenizerError(f"the tokenizer.json in {directory} is corrupt.") from None
        tok = cls(tokens, scores, types, **options)
        template = data.get("chat_template")
        tok.chat_template = template if isinstance(template, str) else None
        return tok
