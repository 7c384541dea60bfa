"""GPT-2's byte-level BPE tokenizer (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners", section 2.2), loaded from a Hugging Face GPT-2 directory.

Encoding text is three steps:

1. Pre-tokenise: cut the text into "words" with GPT-2's pattern
       's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
   BPE never merges across these cuts, so " the" and "the," stay separate pieces. Python's `re`
   has no \\p{...} classes, so `pretokenize` below is a hand-written scanner that reproduces
   what the `regex` module does with that pattern (tests compare the two on random text).
2. Bytes to symbols: each word's UTF-8 bytes become printable characters through
   `BYTE_TO_UNICODE`, so every byte string is spelled in vocab.json's alphabet and no text is
   ever out of vocabulary.
3. Merge: repeatedly join the adjacent pair with the lowest rank in merges.txt, until no
   adjacent pair has a rank. The final symbols are looked up in vocab.json.

Special token: "<|endoftext|>" (id 50256 in GPT-2, read from vocab.json) is eos_id and bos_id.
Following minillm's Tokenizer convention, plain `encode(text)` treats the characters
"<|endoftext|>" in text as ordinary text and `decode` renders the special id as "".
`encode(text, allowed_special="all")` gives Hugging Face's GPT2Tokenizer behaviour, where the
literal string becomes the special id.
"""

from __future__ import annotations

import heapq
import json
import os
import unicodedata
from pathlib import Path
from typing import Any, Iterable

from minillm.checkpoints.atomic import write_file
from minillm.errors import TokenizerError
from minillm.tokenizers.base import EOT_TOKEN, Tokenizer

VOCAB_NAME = "vocab.json"
MERGES_NAME = "merges.txt"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table. Printable Latin-1 bytes stand for themselves; the rest
    (control characters, space, 127-160, 173) are moved to 256+n so that no symbol in vocab.json
    is whitespace or invisible."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_UNICODE = _bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}

# --- pre-tokenisation -------------------------------------------------------------------------

# The `regex` module's \s is Unicode's White_Space property (a fixed list of 25 characters).
# str.isspace() differs: it also accepts U+001C..U+001F, which GPT-2's pattern treats as
# "other", so we spell the set out instead of calling isspace().
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
LETTER, NUMBER, SPACE, OTHER = 0, 1, 2, 3
_char_class_cache: dict[str, int] = {}


def char_class(ch: str) -> int:
    """LETTER (\\p{L}), NUMBER (\\p{N}), SPACE (\\s) or OTHER, memoised per character."""
    k = _char_class_cache.get(ch)
    if k is None:
        if ch in _WHITESPACE:
            k = SPACE
        else:
            major = unicodedata.category(ch)[0]
            k = LETTER if major == "L" else NUMBER if major == "N" else OTHER
        _char_class_cache[ch] = k
    return k


def pretokenize(text: str) -> list[str]:
    """Split `text` exactly as regex.findall(GPT-2's pattern, text) would.

    At each position the pattern's alternatives are tried in order, and so are the branches here:
    a contraction; an optional single " " followed by a run of one class (letters, numbers, or
    "other"); else a whitespace run. A whitespace run that is followed by a non-space gives up its
    last character (that is `\\s+(?!\\S)`), so "a  b" -> ["a", " ", " b"]: the word keeps its
    leading space, which is how GPT-2's vocabulary spells most words.
    """
    cls = char_class
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        # 's 't 're 've 'm 'll 'd -- case-sensitive, and only where a match starts.
        if ch == "'" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in "stmd":
                out.append(text[i : i + 2])
                i += 2
                continue
            if text.startswith(("re", "ve", "ll"), i + 1):
                out.append(text[i : i + 3])
                i += 3
                continue
        start = i
        k = cls(ch)
        # ` ?X+`: one plain space (not a tab, not U+3000) may lead a letter/number/other run.
        if ch == " " and i + 1 < n and cls(text[i + 1]) != SPACE:
            i += 1
            k = cls(text[i])
        j = i + 1
        while j < n and cls(text[j]) == k:
            j += 1
        if k == SPACE and j < n and j - start > 1:
            j -= 1  # \s+(?!\S): leave the last whitespace to lead the next word
        out.append(text[start:j])
        i = j
    return out


# --- byte-pair merging ------------------------------------------------------------------------


def bpe_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges by rank: always join the adjacent pair with the lowest rank, leftmost first.

    The textbook loop rescans the whole word after every merge, which is quadratic and slow on
    long unspaced words (a paragraph of Chinese is one \\p{L}+ word). Here the symbols form a
    linked list and candidate pairs sit in a heap keyed by (rank, position), so each merge costs
    O(log n). A heap entry goes stale when a neighbour has been merged since; it is recognised
    because the symbols at its two slots no longer spell the pair it was pushed for.
    """
    n = len(symbols)
    if n < 2:
        return list(symbols)
    sym = list(symbols)
    nxt = list(range(1, n + 1))  # nxt[i] == n marks the end of the list
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        r = ranks.get((sym[i], sym[i + 1]))
        if r is not None:
            heap.append((r, i, sym[i], sym[i + 1]))
    heapq.heapify(heap)
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i] if sym[i] is not None else n
        if j >= n or sym[i] != a or sym[j] != b:
            continue  # stale: one side has been merged into something else since
        sym[i] = a + b
        sym[j] = None
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        p, q = prv[i], nxt[i]
        if p >= 0 and (r := ranks.get((sym[p], sym[i]))) is not None:
            heapq.heappush(heap, (r, p, sym[p], sym[i]))
        if q < n and (r := ranks.get((sym[i], sym[q]))) is not None:
            heapq.heappush(heap, (r, i, sym[i], sym[q]))
    return [s for s in sym if s is not None]


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


class GPT2Tokenizer(Tokenizer):
    """Byte-level BPE with GPT-2's vocab.json + merges.txt. Round-trips any str that is valid
    Unicode (no lone surrogates) exactly: decode(encode(text)) == text."""

    kind = "gpt2"
    _CACHE_LIMIT = 100_000  # words; cleared when full, so memory stays bounded on huge corpora

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        if EOT_TOKEN not in vocab:
            raise TokenizerError(f"a GPT-2 vocabulary needs a {EOT_TOKEN} token.")
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self.special = {EOT_TOKEN: self.vocab[EOT_TOKEN]}
        self.eos_id = self.bos_id = self.special[EOT_TOKEN]  # one boundary token for both ends
        self.pad_id = None
        self._vocab_size = max(self.vocab.values()) + 1
        # id -> exact bytes. Byte-level tokens map back through UNICODE_TO_BYTE; a character
        # outside that alphabet (possible only in hand-added tokens) stands for its own UTF-8.
        # Special ids decode to b"" (the base-class convention).
        self._id_to_bytes: dict[int, bytes] = {}
        for tok, i in self.vocab.items():
            self._id_to_bytes[i] = b"" if tok in self.special else b"".join(
                bytes([UNICODE_TO_BYTE[c]]) if c in UNICODE_TO_BYTE else c.encode("utf-8")
                for c in tok
            )
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- loading and saving ------------------------------------------------------------------
    @classmethod
    def from_files(
        cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike
    ) -> "GPT2Tokenizer":
        vocab = _read_vocab(Path(vocab_json))
        return cls(vocab, _read_merges(Path(merges_txt), vocab))

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> "GPT2Tokenizer":
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
    def _from_data(cls, data: dict[str, Any], directory: Path) -> "GPT2Tokenizer":
        vocab, merges = data.get("vocab", VOCAB_NAME), data.get("merges", MERGES_NAME)
        if not (isinstance(vocab, str) and isinstance(merges, str)):
            raise TokenizerError(f"the GPT-2 tokenizer.json in {directory} is corrupt.")
        return cls.from_files(directory / vocab, directory / merges)

    # -- the Tokenizer interface -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def name(self) -> str:
        return f"gpt2 byte-level BPE ({len(self.merges)} merges)"

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Token ids for ``text``.

        By default (the minillm convention) "<|endoftext|>" in the text is ordinary characters.
        ``allowed_special="all"`` (or a collection naming it) makes that literal text encode to
        ``eos_id``, as Hugging Face's GPT2Tokenizer always does (tiktoken only when asked).
        """
        if allowed_special == "all":
            allowed = list(self.special)
        else:
            allowed = [s for s in allowed_special if s in self.special]
        ids: list[int] = []
        for piece, is_special in _split_special(text, allowed):
            if is_special:
                ids.append(self.special[piece])
                continue
            for word in pretokenize(piece):
                cached = self._cache.get(word)
                ids.extend(cached if cached is not None else self._encode_word(word))
        return ids

    def _encode_word(self, word: str) -> tuple[int, ...]:
        try:
            raw = word.encode("utf-8")
        except UnicodeEncodeError:
            raise TokenizerError(
                f"the text contains {word!r}, which is not valid Unicode (a lone surrogate)."
            ) from None
        symbols = bpe_merge([BYTE_TO_UNICODE[b] for b in raw], self.ranks)
        try:
            ids = tuple(self.vocab[s] for s in symbols)
        except KeyError as e:
            raise TokenizerError(f"the GPT-2 vocabulary lacks the symbol {e.args[0]!r}.") from None
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes the ids stand for; may start or end inside a multi-byte character."""
        table = self._id_to_bytes
        try:
            return b"".join([table[i] for i in self._check_ids(ids)])
        except KeyError as e:  # an id inside range(vocab_size) that vocab.json skips
            raise TokenizerError(f"token id {e.args[0]} is not in the GPT-2 vocabulary.") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; bytes that do not form whole UTF-8 characters become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def _split_special(text: str, allowed: list[str]):
    """Yield (piece, is_special): ``text`` cut around every occurrence of an allowed special
    string, scanning left to right."""
    start = 0
    while allowed:
        hits = [(at, s) for s in allowed if (at := text.find(s, start)) >= 0]
        if not hits:
            break
        at, s = min(hits, key=lambda h: (h[0], -len(h[1])))  # leftmost, then longest
        if at > start:
            yield text[start:at], False
        yield s, True
        start = at + len(s)
    if start < len(text):
        yield text[start:], False
