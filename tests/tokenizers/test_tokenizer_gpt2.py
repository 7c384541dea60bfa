"""GPT-2 byte-level BPE: the pre-tokeniser, the byte table, merging by rank, round trips, files.

No real GPT-2 vocabulary is downloaded: `train_bpe` below learns a small one from a corpus and
writes it in Hugging Face's vocab.json + merges.txt layout, which is enough to exercise every
code path (the real files differ only in size).
"""

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.errors import TokenizerError
from minillm.tokenizers.base import EOT_TOKEN
from minillm.tokenizers.bpe import SHIFT, ByteLevelBPETokenizer
from minillm.tokenizers.gpt2 import (
    BYTE_TO_UNICODE,
    GPT2Tokenizer,
    bpe_merge,
    pretokenize,
)

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

CORPUS = (
    "The quick brown fox jumps over the lazy dog. I'll say it again: the dog didn't move!\n"
    "She's here, they're there, we've gone, I'm tired, he'd know, it's 2024 and 1,234,567.89.\n"
    "    indented code:\tx = y + 42  # comment\n\n\nLast line with trailing spaces   \n"
    "Unicode: café naïve résumé — “quotes” … 中文文本测试 العربية हिन्दी 😀👍🏽 👨‍👩‍👧\n"
) * 5


def merge_pair(seq, pair):
    """``seq`` with every occurrence of the adjacent ``pair`` merged into one symbol, left to
    right."""
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
            out.append(seq[i] + seq[i + 1])
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


def train_bpe(corpus: str, num_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A tiny byte-level BPE trainer: 256 byte symbols, then `num_merges` times merge the most
    frequent adjacent pair (ties: the smallest pair) inside pre-tokenised words."""
    vocab = {BYTE_TO_UNICODE[b]: b for b in range(256)}
    words = Counter(pretokenize(corpus))
    seqs = {w: [BYTE_TO_UNICODE[b] for b in w.encode("utf-8")] for w in words}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, seq in seqs.items():
            for pair in zip(seq, seq[1:]):
                pairs[pair] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        for w, seq in seqs.items():
            seqs[w] = merge_pair(seq, best)
    vocab[EOT_TOKEN] = len(vocab)
    return vocab, merges


def write_hf_files(directory, vocab, merges, *, merge_lines=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = merge_lines if merge_lines is not None else [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", "utf-8")
    return directory


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    vocab, merges = train_bpe(CORPUS, 300)
    return write_hf_files(tmp_path_factory.mktemp("gpt2"), vocab, merges)


@pytest.fixture(scope="module")
def tok(trained_dir):
    return GPT2Tokenizer.from_directory(trained_dir)


# -- the byte table -----------------------------------------------------------------------------


def test_byte_table_is_gpt2s():
    assert len(set(BYTE_TO_UNICODE.values())) == 256
    for b in [*range(33, 127), *range(161, 173), *range(174, 256)]:
        assert BYTE_TO_UNICODE[b] == chr(b)
    # The well-known spellings in GPT-2's vocab.json: NUL, newline, space, DEL, soft hyphen.
    assert BYTE_TO_UNICODE[0] == "Ā"
    assert BYTE_TO_UNICODE[ord("\n")] == "Ċ"
    assert BYTE_TO_UNICODE[ord(" ")] == "Ġ"
    assert BYTE_TO_UNICODE[127] == chr(256 + 33)
    assert BYTE_TO_UNICODE[173] == chr(323)


# -- pre-tokenisation ---------------------------------------------------------------------------

SPLITS = [
    ("", []),
    ("Hello world", ["Hello", " world"]),
    ("Hello  world", ["Hello", " ", " world"]),
    ("  x", [" ", " x"]),
    ("x  ", ["x", "  "]),
    ("a\n\nb", ["a", "\n", "\n", "b"]),
    ("a \n b", ["a", " \n", " b"]),
    ("a\tb", ["a", "\t", "b"]),
    ("I'm", ["I", "'m"]),
    ("I'll don't He'S they're", ["I", "'ll", " don", "'t", " He", "'", "S", " they", "'re"]),
    ("'tis ''s !'s", ["'t", "is", " ''", "s", " !'", "s"]),
    ("abc123 4.5", ["abc", "123", " 4", ".", "5"]),
    ("Hi!!! ...?", ["Hi", "!!!", " ...?"]),
    ("x = y+1;", ["x", " =", " y", "+", "1", ";"]),
    ("naïve café", ["naïve", " café"]),
    ("e\u0301", ["e", "\u0301"]),  # a combining mark is \p{M}, not a letter
    ("中文 text", ["中文", " text"]),
    ("a\u3000b", ["a", "\u3000", "b"]),  # only U+0020 may lead a word, not ideographic space
    ("a\x1cb", ["a", "\x1c", "b"]),  # isspace() says yes, GPT-2's \s says no
    ("x²½", ["x", "²½"]),
    ("hi 😀👍", ["hi", " 😀👍"]),
]


@pytest.mark.parametrize("text,expected", SPLITS)
def test_pretokenize_hand_written_cases(text, expected):
    assert pretokenize(text) == expected


def test_pretokenize_matches_regex_on_the_hand_written_cases():
    regex = pytest.importorskip("regex")
    for text, expected in SPLITS:
        assert regex.findall(GPT2_PATTERN, text) == expected, text


_TRICKY = list(" \t\n\r\x0b\x0c\x1c\x85\xa0\u3000\u2028'strevmldSTLaZ19²½Ⅻ!.-_é\u0301中😀\u200d٣हि")


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from(_TRICKY),
            # Cn excluded: `regex` ships a newer Unicode database than Python's unicodedata, so
            # characters unassigned in ours may be letters in its. Every assigned one agrees.
            st.characters(exclude_categories=["Cn", "Cs"]),
        ),
        max_size=40,
    )
)
def test_pretokenize_matches_regex_module(text):
    regex = pytest.importorskip("regex")
    assert pretokenize(text) == regex.findall(GPT2_PATTERN, text)


@given(st.text(max_size=60))
def test_pretokenize_pieces_cover_the_text(text):
    pieces = pretokenize(text)
    assert "".join(pieces) == text and all(pieces)


# -- merging by rank ----------------------------------------------------------------------------


def naive_bpe(symbols, ranks):
    """GPT-2's original encoder.py loop: find the lowest-ranked pair, merge every occurrence
    left to right, repeat."""
    word = list(symbols)
    while len(word) > 1:
        pairs = set(zip(word, word[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        word = merge_pair(word, best)
    return word


def test_bpe_merge_matches_the_naive_loop_on_random_words():
    rng = random.Random(0)
    for trial in range(300):
        alphabet = "abc"[: rng.randint(1, 3)]
        # Random merges over random strings, so chains like (ab, c) and overlaps like "aaaa" occur.
        ranks, tokens = {}, list(alphabet)
        for _ in range(rng.randint(0, 12)):
            a, b = rng.choice(tokens), rng.choice(tokens)
            if (a, b) not in ranks:
                ranks[(a, b)] = len(ranks)
                tokens.append(a + b)
        word = [rng.choice(alphabet) for _ in range(rng.randint(0, 20))]
        want = naive_bpe(word, ranks)
        assert bpe_merge(word, ranks) == want, (word, ranks)
        # the tokenizer's form: symbol ids, a pair as one int, merged[rank] the joined symbol
        ids = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
        by_id = {ids[a] << SHIFT | ids[b]: r for (a, b), r in ranks.items()}
        merged = [ids[a + b] for (a, b) in ranks]
        got = bpe_merge([ids[c] for c in word], by_id, merged)
        assert [list(ids)[i] for i in got] == want, (word, ranks)


def test_merges_through_symbols_that_are_no_tokens():
    # "ab" is only a step on the way to "abc": BPE still takes it; alone it is no token
    vocab = {"a": 0, "b": 1, "c": 2, "abc": 3, EOT_TOKEN: 4}
    merges = [("a", "b"), ("ab", "c")]
    tok = ByteLevelBPETokenizer(vocab, merges, special={EOT_TOKEN: 4}, control=[4], eos_id=4)
    assert tok.encode("abc") == [3] and tok.encode("cabc") == [2, 3]
    assert tok.merges == merges and tok.vocab == vocab
    with pytest.raises(TokenizerError, match="lacks the symbol 'ab'"):
        tok.encode("ab")
    with_unk = ByteLevelBPETokenizer(vocab, merges, eos_id=4, unk_id=2)
    assert with_unk.encode("abab") == [2, 2] and with_unk.ranks == {("a", "b"): 0, ("ab", "c"): 1}


def _hand_tokenizer(tmp_path, merges):
    tokens = ["a", "b", "c", "d", "ab", "bc", "cd", "abc", "aa", "aaaa"]
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab[EOT_TOKEN] = len(vocab)
    return GPT2Tokenizer.from_directory(write_hf_files(tmp_path, vocab, merges))


@pytest.mark.parametrize(
    "merges,text,expected",
    [
        ([("b", "c"), ("a", "b")], "abc", [0, 5]),  # bc wins by rank, then (a, bc) is no merge
        ([("a", "b"), ("b", "c")], "abc", [4, 2]),
        ([("a", "b"), ("ab", "c"), ("b", "c")], "abc", [7]),
        ([("c", "d"), ("b", "c"), ("a", "b")], "abcd", [4, 6]),  # rank, not position, decides
        ([("a", "a"), ("aa", "aa")], "aaaa", [9]),
        ([("a", "a"), ("aa", "aa")], "aaa", [8, 0]),  # overlapping pairs: leftmost first
        ([], "abc", [0, 1, 2]),
    ],
)
def test_merges_apply_by_rank(tmp_path, merges, text, expected):
    tok = _hand_tokenizer(tmp_path, merges)
    assert tok.encode(text) == expected
    assert tok.decode(expected) == text


# -- round trips --------------------------------------------------------------------------------

TRICKY_TEXTS = [
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\t\tnewlines\n\n\r\n end\n",
    "I'll don't He'S they're WE'VE 'tis",
    "0123456789 3.14159 1,000,000",
    "!!! ??? ... --- (){}[] <> @#$%^&*",
    "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈",  # emoji, skin tone modifier, ZWJ sequences (4-byte UTF-8)
    "中文文本测试，标点。",
    "العربية مع تشكيل: مَرْحَبًا",
    "हिन्दी देवनागरी",
    "mixed: café 中文 😀 123 I'm\u00a0nbsp\u3000ideographic",
    "replacement char \ufffd stays \ufffd",
    "\x00\x01\x1c\x7f\x85\xad control bytes",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 \U0010ffff",
    CORPUS,
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_round_trip_tricky_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < tok.vocab_size and i != tok.eos_id for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_random_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_merges_compress_the_training_corpus(tok):
    # With 300 merges learnt on it, the corpus takes far fewer tokens than bytes.
    assert len(tok.encode(CORPUS)) < 0.5 * len(CORPUS.encode("utf-8"))
    # "Ġthe" is learnt: a word keeps its leading space and becomes one token.
    assert tok.encode(" the") == [tok.vocab["Ġthe"]]


def test_vocab_without_a_byte_is_a_clear_error(tmp_path):
    tok = _hand_tokenizer(tmp_path, [])
    # A vocabulary without the bytes of "€" cannot encode it: a clear error, not a crash.
    with pytest.raises(TokenizerError, match="lacks the symbol"):
        tok.encode("€")


def test_split_multibyte_character(tok):
    ids = tok.encode("€")  # 3 UTF-8 bytes, not merged by the trained vocabulary
    assert len(ids) == 3
    assert tok.decode_bytes(ids[:2]) == "€".encode("utf-8")[:2]
    assert tok.decode(ids[:2]) == "\ufffd"
    assert tok.decode(ids[1:]) == "\ufffd\ufffd"  # two stray continuation bytes
    assert tok.decode(ids[:2] + tok.encode("x")) == "\ufffdx"


def test_end_of_text(tok):
    assert tok.eos_id == tok.bos_id == tok.vocab[EOT_TOKEN] == tok.vocab_size - 1
    assert tok.pad_id is None
    text = f"one{EOT_TOKEN}two"
    plain = tok.encode(text)  # minillm's convention: the characters are ordinary text
    assert tok.eos_id not in plain and tok.decode(plain) == text
    hf = tok.encode(text, allowed_special="all")  # Hugging Face's: the string is the token
    assert hf == tok.encode("one") + [tok.eos_id] + tok.encode("two")
    assert tok.encode(text, allowed_special={EOT_TOKEN}) == hf
    assert tok.decode(hf) == "onetwo"  # the special id decodes to ""


def test_cache_limit_does_not_change_results(tok, trained_dir):
    small = GPT2Tokenizer.from_directory(trained_dir)
    small._CACHE_LIMIT = 3  # evicts all the time
    assert small.encode(CORPUS) == tok.encode(CORPUS) == tok.encode(CORPUS)


# -- files and errors ---------------------------------------------------------------------------


def test_save_then_load_gives_identical_encodings(tok, trained_dir, tmp_path):
    from minillm.tokenizers import load_tokenizer

    tok.save(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "tokenizer.json").read_text())
    assert config["kind"] == "gpt2"
    # Same Hugging Face files as the ones it was loaded from.
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "saved" / name).read_bytes() == (trained_dir / name).read_bytes()
    saved = tmp_path / "saved"
    for again in (GPT2Tokenizer.from_directory(saved), load_tokenizer(saved)):
        assert isinstance(again, GPT2Tokenizer)
        for text in TRICKY_TEXTS:
            assert again.encode(text) == tok.encode(text)


def test_from_files(trained_dir, tok):
    again = GPT2Tokenizer.from_files(trained_dir / "vocab.json", trained_dir / "merges.txt")
    assert again.encode(CORPUS) == tok.encode(CORPUS)


def test_missing_or_incomplete_directory(tmp_path, trained_dir):
    with pytest.raises(TokenizerError, match="does not exist"):
        GPT2Tokenizer.from_directory(tmp_path / "nowhere")
    for missing in ("vocab.json", "merges.txt"):
        d = tmp_path / f"no_{missing}"
        d.mkdir()
        for other in {"vocab.json", "merges.txt"} - {missing}:
            (d / other).write_bytes((trained_dir / other).read_bytes())
        with pytest.raises(TokenizerError, match=missing):
            GPT2Tokenizer.from_directory(d)


@pytest.mark.parametrize(
    "lines,lineno",
    [(["a b", "a b c"], 3), (["a  b"], 2), (["ab"], 2), (["a b", "b d"], 3)],
)
def test_malformed_merges_name_the_line(tmp_path, lines, lineno):
    vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, EOT_TOKEN: 4}  # "bd" is not in it
    d = write_hf_files(tmp_path, vocab, None, merge_lines=lines)
    with pytest.raises(TokenizerError, match=f"line {lineno}"):
        GPT2Tokenizer.from_directory(d)


def test_bad_vocab_and_bad_input(tmp_path, tok):
    d = write_hf_files(tmp_path / "no_eot", {"a": 0}, [])
    with pytest.raises(TokenizerError, match="endoftext"):
        GPT2Tokenizer.from_directory(d)
    (d / "vocab.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="JSON"):
        GPT2Tokenizer.from_directory(d)
    with pytest.raises(TokenizerError, match="surrogate"):
        tok.encode("a\ud800b")
    with pytest.raises(TokenizerError):
        tok.decode([tok.vocab_size])
