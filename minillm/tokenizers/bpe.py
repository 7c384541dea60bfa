"""Byte-level BPE (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
section 2.2): the tokenizer family of GPT-2 and of the GGUF ``gpt2`` vocabularies (SmolLM,
Llama 3, Qwen, ...).

Encoding text is four steps:

0. Special tokens: the text is first cut around the special strings the tokenizer parses
   (``<|im_start|>`` in a rendered chat prompt); each becomes its id directly.
1. Pre-tokenise: cut the rest into "words" with the pattern the vocabulary was trained with
   (``PRETOKENIZERS``). GPT-2's is
       's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
   BPE never merges across these cuts, so " the" and "the," stay separate pieces. Python's `re`
   has no \\p{...} classes, so `pretokenize` below is a hand-written scanner that reproduces
   what the `regex` module does with that pattern (tests compare the two on random text).
   SmolLM's ("smollm") first splits off every digit on its own, then applies GPT-2's pattern to
   the pieces between, so "12345" is always five tokens.
2. Bytes to symbols: each word's UTF-8 bytes become printable characters through
   `BYTE_TO_UNICODE`, so every byte string is spelled in the vocabulary's alphabet and no text is
   ever out of vocabulary.
3. Merge: repeatedly join the adjacent pair with the lowest rank in the merge list, until no
   adjacent pair has a rank. The final symbols are looked up in the vocabulary.
"""

from __future__ import annotations

import heapq
import unicodedata
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from minillm.errors import TokenizerError
from minillm.tokenizers.base import Tokenizer

# GGUF token types (llama.cpp's llama_token_type), stored in tokenizer.ggml.token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


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


SHIFT = 30  # a pair of symbol ids (a, b) is the one int a << SHIFT | b (ids below 2**30)


def bpe_merge(symbols: list, ranks: dict, merged: Sequence[int] | None = None) -> list:
    """Apply merges by rank: always join the adjacent pair with the lowest rank, leftmost first.

    Symbols are strings with ``ranks`` keyed by (a, b) pairs, joined as a + b; or (``merged``
    given, what the tokenizer runs) symbol ids with ``ranks`` keyed by a << SHIFT | b, the pair
    of rank r joined into the symbol merged[r]. The textbook loop rescans the whole word after
    every merge, which is quadratic and slow on long unspaced words (a paragraph of Chinese is
    one \\p{L}+ word). Here the symbols form a linked list and candidate pairs sit in a heap
    keyed by (rank, position), so each merge costs O(log n). A heap entry goes stale when a
    neighbour has been merged since; it is recognised because the symbols at its two slots no
    longer are the pair it was pushed for.
    """
    n = len(symbols)
    if n < 2:
        return list(symbols)
    if merged is None:
        def rank(a, b):
            return ranks.get((a, b))

        def join(a, b, r):
            return a + b
    else:
        def rank(a, b):
            return ranks.get(a << SHIFT | b)

        def join(a, b, r):
            return merged[r]
    sym = list(symbols)
    nxt = list(range(1, n + 1))  # nxt[i] == n marks the end of the list
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        r = rank(sym[i], sym[i + 1])
        if r is not None:
            heap.append((r, i, sym[i], sym[i + 1]))
    heapq.heapify(heap)
    while heap:
        r, i, a, b = heapq.heappop(heap)
        j = nxt[i] if sym[i] is not None else n
        if j >= n or sym[i] != a or sym[j] != b:
            continue  # stale: one side has been merged into something else since
        sym[i] = join(a, b, r)
        sym[j] = None
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        p, q = prv[i], nxt[i]
        if p >= 0 and (r := rank(sym[p], sym[i])) is not None:
            heapq.heappush(heap, (r, p, sym[p], sym[i]))
        if q < n and (r := rank(sym[i], sym[q])) is not None:
            heapq.heappush(heap, (r, i, sym[i], sym[q]))
    return [s for s in sym if s is not None]


def pretokenize_digits(text: str) -> list[str]:
    """SmolLM's pre-tokenizer: every \\p{N} character is a piece of its own; the text between
    digits is cut by GPT-2's pattern (`pretokenize`). "a 12" -> ["a", " ", "1", "2"]."""
    out: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if char_class(ch) == NUMBER:
            if i > start:
                out.extend(pretokenize(text[start:i]))
            out.append(ch)
            start = i + 1
    if start < len(text):
        out.extend(pretokenize(text[start:]))
    return out


_CONTRACTIONS = ("s", "t", "m", "d")
_CONTRACTIONS3 = ("re", "ve", "ll")


def pretokenize_llama3(text: str) -> list[str]:
    r"""Split ``text`` as regex.findall does with Llama 3's pattern (GGUF pre "llama-bpe"):
        (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
        | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    Unlike GPT-2's: contractions in any case, numbers in groups of at most three digits, a
    letter run may take any one non-newline character in front (" the", "(the", "\tthe"),
    punctuation takes the newlines after it, and newlines are split from the spaces after them.
    """
    cls = char_class
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        k = cls(ch)
        if ch == "'" and i + 1 < n:  # contractions, any case
            if text[i + 1].lower() in _CONTRACTIONS:
                out.append(text[i:i + 2])
                i += 2
                continue
            if text[i + 1:i + 3].lower() in _CONTRACTIONS3:
                out.append(text[i:i + 3])
                i += 3
                continue
        # [^\r\n\p{L}\p{N}]?\p{L}+
        start = i
        if k == LETTER or (k != NUMBER and ch not in "\r\n" and i + 1 < n
                           and cls(text[i + 1]) == LETTER):
            j = i + 1
            while j < n and cls(text[j]) == LETTER:
                j += 1
        elif k == NUMBER:  # \p{N}{1,3}
            j = i + 1
            while j < n and j - i < 3 and cls(text[j]) == NUMBER:
                j += 1
        elif k == OTHER or (ch == " " and i + 1 < n and cls(text[i + 1]) == OTHER):
            j = i + 1  # ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            while j < n and cls(text[j]) == OTHER:
                j += 1
            while j < n and text[j] in "\r\n":
                j += 1
        else:  # a whitespace run
            end = i
            while end < n and cls(text[end]) == SPACE:
                end += 1
            last_nl = max(text.rfind("\n", i, end), text.rfind("\r", i, end))
            if last_nl >= 0:  # \s*[\r\n]+: up to the run's last newline
                j = last_nl + 1
            elif end < n and end - i > 1:  # \s+(?!\S): leave one space to lead the next piece
                j = end - 1
            else:  # \s+ (the run ends the text, or is one character before a non-space)
                j = end
        out.append(text[start:j])
        i = j
    return out


# tokenizer.ggml.pre -> the pre-tokenizer of that vocabulary
PRETOKENIZERS = {"gpt2": pretokenize, "default": pretokenize, "smollm": pretokenize_digits,
                 "llama-bpe": pretokenize_llama3}


def split_special(text: str, allowed: Sequence[str]):
    """Yield (piece, is_special): ``text`` cut around every occurrence of an allowed special
    string, scanning left to right (leftmost match first, the longest where two start together)."""
    start = 0
    while allowed:
        hits = [(at, s) for s in allowed if (at := text.find(s, start)) >= 0]
        if not hits:
            break
        at, s = min(hits, key=lambda h: (h[0], -len(h[1])))
        if at > start:
            yield text[start:at], False
        yield s, True
        start = at + len(s)
    if start < len(text):
        yield text[start:], False


def _token_bytes(tok: str) -> bytes:
    """A byte-level token's bytes; a character outside the byte alphabet (possible only in
    hand-added tokens) stands for its own UTF-8."""
    return b"".join(bytes([UNICODE_TO_BYTE[c]]) if c in UNICODE_TO_BYTE else c.encode("utf-8")
                    for c in tok)


class _Packed:
    """A list of str or bytes items (None for a gap) held as one string and the offsets into it:
    item i is ``data[at[i]:at[i + 1]]``. 49k small objects would each carry their own header
    (SmolLM2's token strings: 3.6 MiB as objects, 0.6 packed)."""

    def __init__(self, items: Sequence, empty: str | bytes):
        self.gaps = frozenset(i for i, x in enumerate(items) if x is None)
        self.data = empty.join(x for x in items if x is not None)
        self.at = array("q", bytes(8 * (len(items) + 1)))
        end = 0
        for i, x in enumerate(items):
            end += len(x) if x is not None else 0
            self.at[i + 1] = end

    def __len__(self) -> int:
        return len(self.at) - 1

    def __getitem__(self, i: int):
        return None if i in self.gaps else self.data[self.at[i]:self.at[i + 1]]

    def join(self, ids: Sequence[int]):
        """The items of ``ids`` (each in range, none a gap) concatenated."""
        data, at = self.data, self.at
        return data[:0].join([data[at[i]:at[i + 1]] for i in ids])


class ByteLevelBPETokenizer(Tokenizer):
    """Byte-level BPE over a vocabulary (token string -> id) and a ranked merge list.

    special:  token string -> id for the tokens matched as wholes in the text (GGUF's control and
              user-defined tokens; GPT-2's "<|endoftext|>"). ``encode`` parses them when
              ``parse_special`` is true (or when asked per call); ``decode`` renders control
              tokens as "" and user-defined tokens as their text.
    pre:      the pre-tokenizer's name, a key of ``PRETOKENIZERS``.
    add_bos:  prepend ``bos_id`` to every ``encode`` (GGUF's tokenizer.ggml.add_bos_token).
    Round-trips any valid str exactly: decode(encode(text)) == text when no special string or
    control token is involved.
    """

    kind = "bpe"
    bytes_join = True  # each id's bytes, joined (control tokens: none)
    _CACHE_LIMIT = 100_000  # words; cleared when full, so memory stays bounded on huge corpora
    chat_template: str | None = None  # the model's Jinja chat template, saved alongside

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], *,
                 pre: str = "gpt2", special: dict[str, int] | None = None,
                 control: Iterable[int] = (), eos_id: int, bos_id: int | None = None,
                 pad_id: int | None = None, unk_id: int | None = None, add_bos: bool = False,
                 parse_special: bool = True):
        if pre not in PRETOKENIZERS:
            raise TokenizerError(f"the pre-tokenizer {pre!r} is not supported; supported: "
                                 f"{', '.join(sorted(PRETOKENIZERS))}.")
        self.pre = pre
        self._pretokenize = PRETOKENIZERS[pre]
        self.special = dict(special or {})
        self.control = frozenset(int(i) for i in control)
        self._vocab_size = max(vocab.values()) + 1 if vocab else 0
        for name, i in (("eos", eos_id), ("bos", bos_id), ("pad", pad_id), ("unk", unk_id)):
            if i is not None and not 0 <= i < self._vocab_size:
                raise TokenizerError(f"the {name} token id {i} is outside the vocabulary "
                                     f"(0..{self._vocab_size - 1}).")
        self.eos_id = int(eos_id)
        self.bos_id = self.eos_id if bos_id is None else int(bos_id)
        self.pad_id, self.unk_id = pad_id, unk_id
        self.add_bos = bool(add_bos)
        self.parse_special = bool(parse_special)
        # Token strings, id -> str, packed into one str with offsets (``vocab`` is rebuilt from
        # them when asked for); a vocabulary that gives two strings one id is kept as it is.
        strings: list[str | None] = [None] * self._vocab_size
        for tok, i in vocab.items():
            if strings[i] is None:
                strings[i] = tok
        self._strings = _Packed(strings, "")
        self._vocab = dict(vocab) if len(vocab) > len(strings) - len(self._strings.gaps) \
            else None
        # BPE runs on symbol ids: a token's id where the symbol is a token (always, for a
        # consistent BPE), else an id from _sym_base on (``_extra``). Each merge is one int key
        # a << SHIFT | b -> its rank, and _merged[rank] the id of the joined symbol: 49k merges
        # then hold no strings or tuples (SmolLM2's tokenizer: 14 -> 8 MiB with the packed
        # token strings and bytes).
        self._sym_base = self._vocab_size
        extra: dict[str, int] = {}

        def sym(text):
            i = vocab.get(text)
            if i is None:
                i = extra.setdefault(text, self._sym_base + len(extra))
            return i

        self._byte_sym = [sym(BYTE_TO_UNICODE[b]) for b in range(256)]  # byte -> symbol id
        self._ranks: dict[int, int] = {}
        self._merged = array("q", bytes(8 * len(merges)))
        for r, (a, b) in enumerate(merges):
            self._ranks[sym(a) << SHIFT | sym(b)] = r
            self._merged[r] = sym(a + b)
        self._extra = list(extra)  # symbols that are no tokens, by id - _sym_base
        if self._sym_base + len(extra) >= 1 << SHIFT:
            raise TokenizerError(f"a BPE vocabulary of {self._sym_base + len(extra)} symbols is "
                                 f"more than {1 << SHIFT}.")
        # the merge list is the ranks' keys in order, kept apart only if a pair repeats
        self._merges = [tuple(m) for m in merges] if len(self._ranks) != len(merges) else None
        self._types: bytes | None = None  # GGUF token types, when built from GGUF's lists
        # id -> exact bytes; control tokens decode to b"" (the base-class convention)
        self._bytes = _Packed([None if t is None else
                               b"" if i in self.control else
                               t.encode("utf-8") if t in self.special else _token_bytes(t)
                               for i, t in enumerate(strings)], b"")
        self._cache: dict[str, tuple[int, ...]] = {}

    def _token_bytes_of(self, i: int) -> bytes | None:
        return self._bytes[i]

    def _symbol(self, i: int) -> str:
        return self._strings[i] if i < self._sym_base else self._extra[i - self._sym_base]

    @classmethod
    def from_token_list(cls, tokens: Sequence[str], merges: Iterable[str],
                        token_types: Sequence[int] | None = None, **options):
        """From GGUF's lists: tokens in id order, merges as "a b" strings, token types (control
        and user-defined tokens become the special ones). The first of duplicate token strings
        is the one ``encode`` produces; every id still decodes."""
        vocab: dict[str, int] = {}
        for i, t in enumerate(tokens):
            vocab.setdefault(t, i)
        pairs = []
        for n, m in enumerate(merges):
            a, sep, b = m.partition(" ")
            if not sep or not a or not b or " " in b:
                raise TokenizerError(f"BPE merge {n} is not two symbols split by one space: "
                                     f"{m!r}.")
            pairs.append((a, b))
        types = list(token_types) if token_types is not None else [NORMAL] * len(tokens)
        if len(types) != len(tokens):
            raise TokenizerError(f"the vocabulary has {len(tokens)} tokens but {len(types)} "
                                 "token types.")
        try:
            packed_types = bytes(int(k) for k in types)
        except (TypeError, ValueError):
            raise TokenizerError("the token types must be small integers (GGUF's 1..6).") from None
        special = {t: i for i, (t, k) in enumerate(zip(tokens, types))
                   if k in (CONTROL, USER_DEFINED) and t and vocab[t] == i}
        control = [i for i, k in enumerate(types) if k == CONTROL]
        tok = cls(vocab, pairs, special=special, control=control, **options)
        del vocab
        tok._types = packed_types
        if tok._strings.gaps or len(tokens) > tok._vocab_size:
            # ids shadowed by an earlier duplicate keep their own string and still decode
            old = tok._bytes
            tok._strings = _Packed(list(tokens), "")
            tok._bytes = _Packed([old[i] if i < len(old) and old[i] is not None
                                  else b"" if i in tok.control else _token_bytes(t)
                                  for i, t in enumerate(tokens)], b"")
        tok._vocab_size = max(tok._vocab_size, len(tokens))
        return tok

    # -- the Tokenizer interface -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in rank order, as (left, right) symbol pairs."""
        if self._merges is not None:
            return list(self._merges)
        mask = (1 << SHIFT) - 1
        return [(self._symbol(k >> SHIFT), self._symbol(k & mask)) for k in self._ranks]

    @property
    def ranks(self) -> dict[tuple[str, str], int]:
        """(left, right) symbol pair -> rank (a new dict: the tokenizer holds ids)."""
        mask = (1 << SHIFT) - 1
        return {(self._symbol(k >> SHIFT), self._symbol(k & mask)): r
                for k, r in self._ranks.items()}

    @property
    def vocab(self) -> dict[str, int]:
        """Token string -> id, the first id of a string that repeats (a new dict, built from
        the packed strings)."""
        if self._vocab is not None:
            return dict(self._vocab)
        vocab: dict[str, int] = {}
        for i in range(len(self._strings)):
            t = self._strings[i]
            if t is not None:
                vocab.setdefault(t, i)
        return vocab

    @property
    def tokens(self) -> list[str]:
        """Every token string in id order ("" at an id the vocabulary skips)."""
        return [self._strings[i] or "" for i in range(len(self._strings))]

    @property
    def token_types(self) -> list[int] | None:
        """GGUF's token types, when the tokenizer was built from GGUF's lists."""
        return None if self._types is None else list(self._types)

    @property
    def name(self) -> str:
        return f"byte-level BPE ({self.pre}, {len(self._ranks)} merges)"

    def token_id(self, text: str) -> int:
        """The id of the token spelled ``text`` exactly (e.g. "<|im_end|>")."""
        i = self.special.get(text)
        if i is None:
            i = self._first_id(text)
        if i is None:
            raise TokenizerError(f"the vocabulary has no token {text!r}.")
        return i

    def _first_id(self, text: str) -> int | None:
        if self._vocab is not None:
            return self._vocab.get(text)
        for i in range(len(self._strings)):  # rare (a stop string, a test): no table for it
            if self._strings[i] == text:
                return i
        return None

    def encode(self, text: str, allowed_special: str | Iterable[str] | None = None) -> list[int]:
        """Token ids for ``text``.

        allowed_special: None -> the tokenizer's default (``parse_special``: every special
        string in the text becomes its id, as Hugging Face and llama.cpp do for chat prompts);
        "all"; or a collection naming the special strings to parse (``()``: none).
        """
        if allowed_special is None:
            allowed_special = "all" if self.parse_special else ()
        if allowed_special == "all":
            allowed = list(self.special)
        else:
            allowed = [s for s in allowed_special if s in self.special]
        ids: list[int] = [self.bos_id] if self.add_bos else []
        for piece, is_special in split_special(text, allowed):
            if is_special:
                ids.append(self.special[piece])
                continue
            for word in self._pretokenize(piece):
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
        symbols = bpe_merge([self._byte_sym[b] for b in raw], self._ranks, self._merged)
        ids = []
        for s in symbols:
            if s >= self._sym_base:  # a symbol that is no token
                if self.unk_id is None:
                    raise TokenizerError(f"the vocabulary lacks the symbol {self._symbol(s)!r} "
                                         "and has no unknown token.")
                s = self.unk_id
            ids.append(s)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids = tuple(ids)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes the ids stand for; may start or end inside a multi-byte character."""
        ids = self._check_ids(ids)
        for i in self._bytes.gaps.intersection(ids):  # inside range(vocab_size), yet skipped
            raise TokenizerError(f"token id {i} is not in the vocabulary.")
        return self._bytes.join(ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; bytes that do not form whole UTF-8 characters become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- the vocabulary as lists, for the file formats (GGUF, tokenizer.json) -----------------
    def all_tokens(self) -> list[str]:
        """Every token string in id order (GGUF's tokenizer.ggml.tokens): the list the
        tokenizer was built from, else the vocabulary's strings ("" at an id it skips)."""
        return self.tokens

    def all_token_types(self) -> list[int]:
        """The GGUF token type of every id (NORMAL, CONTROL, USER_DEFINED): the list the
        tokenizer was built from, else derived from the control and special tokens."""
        types = self.token_types
        if types is None:
            types = [CONTROL if i in self.control else
                     USER_DEFINED if t in self.special else NORMAL
                     for i, t in enumerate(self.all_tokens())]
        return types

    # -- persistence -------------------------------------------------------------------------
    def _save_data(self, directory: Path) -> dict[str, Any]:
        return {"tokens": self.all_tokens(), "token_types": self.all_token_types(),
                "merges": [f"{a} {b}" for a, b in self.merges], "pre": self.pre,
                "eos_id": self.eos_id, "bos_id": self.bos_id, "pad_id": self.pad_id,
                "unk_id": self.unk_id, "add_bos": self.add_bos,
                "parse_special": self.parse_special, "chat_template": self.chat_template}

    @classmethod
    def _from_data(cls, data: dict[str, Any], directory: Path) -> ByteLevelBPETokenizer:
        try:
            tokens, types, merges = data["tokens"], data["token_types"], data["merges"]
            options = {k: data[k] for k in ("pre", "eos_id", "bos_id", "pad_id", "unk_id",
                                            "add_bos", "parse_special")}
            if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
                    and isinstance(merges, list) and all(isinstance(m, str) for m in merges)
                    and isinstance(types, list) and all(type(k) is int for k in types)):
                raise TypeError
        except (KeyError, TypeError):
            raise TokenizerError(f"the BPE tokenizer.json in {directory} is corrupt.") from None
        tok = cls.from_token_list(tokens, merges, types, **options)
        template = data.get("chat_template")
        tok.chat_template = template if isinstance(template, str) else None
        return tok
