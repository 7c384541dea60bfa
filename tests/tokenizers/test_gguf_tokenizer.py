"""The GGUF byte-level BPE tokenizer (minillm.tokenizers.bpe): round trips, SmolLM's digit
split, special tokens in text, persistence; marked slow: the real SmolLM2 file's tokenizer."""

import itertools
import random

import pytest
from gguf_fixtures import CHATML, real_gguf, tiny_vocab, write_tiny_gguf

from minillm.checkpoints.gguf import read_gguf
from minillm.errors import TokenizerError
from minillm.tokenizers import ByteLevelBPETokenizer, load_tokenizer
from minillm.tokenizers.bpe import BYTE_TO_UNICODE, pretokenize, pretokenize_digits
from minillm.tokenizers.chat_template import ChatTemplate

TRICKY = [
    "", " ", "  ", "\n", "\n\n\n", "\t\tx", "a  b", "trailing spaces   ", "   leading",
    "Hello, world!", "It's they're we've I'm he'd you'll", "12345", "3.14159 and 1,000,000",
    "x1y22z333", "naïve café résumé", "日本語のテキスト", "emoji 🤖🚀 mixed", "Ωmega ∑ ∫ √",
    "tabs\tand\r\nwindows line ends", "\u00a0non-breaking\u2003spaces", "١٢٣ arabic digits",
    "<|im_start|> not parsed when asked not to", "a<|im_end|>b", "<|endoftext|>",
]


def tok_from(pre="smollm", **options):
    tokens, types, merges = tiny_vocab()
    options = {"eos_id": 2, "bos_id": 1, "pad_id": 2, "unk_id": 0, **options}
    return ByteLevelBPETokenizer.from_token_list(tokens, merges, types, pre=pre, **options)


def naive_bpe(word, merges):
    """The textbook loop: rescan for the best-ranked adjacent pair after every merge."""
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    syms = [BYTE_TO_UNICODE[b] for b in word.encode("utf-8")]
    while len(syms) > 1:
        pairs = [(ranks.get(p, 1 << 60), i) for i, p in enumerate(itertools.pairwise(syms))]
        r, i = min(pairs)
        if r == 1 << 60:
            break
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    return syms


@pytest.fixture(scope="module")
def tok():
    return tok_from()


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip(tok, text):
    ids = tok.encode(text, allowed_special=())
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


def test_encoding_equals_the_textbook_merge_loop(tok):
    tokens, _, merges = tiny_vocab()
    for text in TRICKY[:12] + ["The capital of France is Paris.", "the fox runs"]:
        want = [tokens.index(s) for w in pretokenize_digits(text) for s in naive_bpe(w, merges)]
        assert tok.encode(text, allowed_special=()) == want, text
    assert len(tok.encode("The capital of France")) < len("The capital of France")


def test_smollm_splits_every_digit(tok):
    assert pretokenize_digits("a 12") == ["a", " ", "1", "2"]
    ids = tok.encode("12345")
    assert len(ids) == 5 and tok.decode(ids[2:3]) == "3"
    assert [tok.decode([i]) for i in tok.encode("x1y22")] == ["x", "1", "y", "2", "2"]
    gpt2 = tok_from(pre="gpt2")
    assert pretokenize("a 12") == ["a", " 12"]
    assert gpt2.decode(gpt2.encode("a 12345")) == "a 12345"


def test_digit_pretokenizer_matches_regex_sequence():
    regex = pytest.importorskip("regex")
    gpt2 = regex.compile(
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    rng = random.Random(7)
    alphabet = "ab Z9 0١\n\t'.,é日😀-  s"
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        want = []
        for piece in regex.split(r"(\p{N})", text):  # digits alone, then GPT-2 on the rest
            if piece:
                want += [piece] if regex.fullmatch(r"\p{N}", piece) else gpt2.findall(piece)
        assert pretokenize_digits(text) == want, repr(text)


def test_special_tokens_in_text(tok):
    text = "<|im_start|>user\nHello<|im_end|>\n"
    ids = tok.encode(text)
    assert ids[0] == 1 and ids.count(2) == 1 and ids[ids.index(2) - 1] != 2
    assert ids == [1] + tok.encode("user\nHello") + [2] + tok.encode("\n")
    assert tok.decode(ids) == "user\nHello\n"  # control tokens decode to ""
    literal = tok.encode(text, allowed_special=())
    assert 1 not in literal and 2 not in literal and tok.decode(literal) == text
    only_end = tok.encode(text, allowed_special={"<|im_end|>"})
    assert 1 not in only_end and 2 in only_end
    assert tok.token_id("<|im_end|>") == 2
    with pytest.raises(TokenizerError, match="no token"):
        tok.token_id("<|nope|>")


def test_add_bos_and_duplicates_and_bad_options():
    t = tok_from(add_bos=True)
    assert t.encode("hi")[0] == 1 and t.decode(t.encode("hi")) == "hi"
    tokens, types, merges = tiny_vocab()
    dup = ByteLevelBPETokenizer.from_token_list(tokens + ["a"], merges, types + [1], eos_id=2)
    assert dup.vocab_size == len(tokens) + 1
    assert dup.encode("a") == [tokens.index("a")] and dup.decode([len(tokens)]) == "a"
    twice = ByteLevelBPETokenizer.from_token_list(tokens, merges + merges[:1], types, eos_id=2)
    assert [f"{a} {b}" for a, b in twice.merges] == merges + merges[:1]  # a repeat is kept
    gap = ByteLevelBPETokenizer({"a": 0, "b": 2}, [], eos_id=0)
    assert gap.decode([2, 0]) == "ba" and gap.vocab_size == 3
    with pytest.raises(TokenizerError, match="token id 1 is not in the vocabulary"):
        gap.decode([0, 1])
    with pytest.raises(TokenizerError, match="'llama9' is not supported"):
        tok_from(pre="llama9")
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok_from(eos_id=10**6)
    with pytest.raises(TokenizerError, match="merge 1 is not two symbols"):
        ByteLevelBPETokenizer.from_token_list(tokens, ["a b", "abc"], types, eos_id=2)


def test_save_and_load(tok, tmp_path):
    tok.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert isinstance(back, ByteLevelBPETokenizer) and back.pre == "smollm"
    for text in TRICKY + ["<|im_start|>assistant\nyes<|im_end|>"]:
        assert back.encode(text) == tok.encode(text)
    assert (back.bos_id, back.eos_id, back.pad_id, back.unk_id) == (1, 2, 2, 0)


def test_tokenizer_from_a_tiny_gguf(tmp_path):
    path, expect = write_tiny_gguf(tmp_path / "t.gguf")
    t = read_gguf(path).tokenizer
    assert t.tokens == expect.tokens and t.vocab_size == len(expect.tokens)
    prompt = ChatTemplate(CHATML).render([{"role": "user", "content": "Hi 42"}], True)
    ids = t.encode(prompt)
    assert ids.count(1) == 3 and ids.count(2) == 2 and ids[0] == 1


# --------------------------------------------------------------------------- the real file
@pytest.fixture(scope="module")
def real():
    REAL = real_gguf()
    return read_gguf(REAL)


@pytest.mark.slow
def test_real_tokenizer(real):
    tok = real.tokenizer
    assert tok.vocab_size == 49152 and len(tok.merges) == 48900 and tok.pre == "smollm"
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, tok.add_bos) == (1, 2, 2, 0, False)
    prompt = ChatTemplate(real.chat_template).render(
        [{"role": "user", "content": "What is the capital of France?"}], True)
    ids = tok.encode(prompt)
    assert len(ids) == 37
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2
    assert tok.decode(ids) == prompt.replace("<|im_start|>", "").replace("<|im_end|>", "")
    for text in TRICKY:
        assert tok.decode(tok.encode(text, allowed_special=())) == text
    digits = tok.encode("12345")
    assert [tok.decode([i]) for i in digits] == list("12345")
    tokens = tok.tokens
    merges = [f"{a} {b}" for a, b in tok.merges]
    for text in ["Hello world", "The capital of France is Paris.", " unbelievable!"]:
        want = [tokens.index(s) for w in pretokenize_digits(text) for s in naive_bpe(w, merges)]
        assert tok.encode(text) == want


def test_llama3_pretokenizer_matches_regex():
    regex = pytest.importorskip("regex")
    from minillm.tokenizers.bpe import pretokenize_llama3

    pattern = regex.compile(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    rng = random.Random(11)
    alphabet = ["a", "B", "é", "日", "1", "٢", "'", "S", "re", "LL", " ", "  ", "\n", "\r", "\t",
                ".", "(", "😀", "\u00a0", "-", "\x85"]
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
        assert pretokenize_llama3(text) == pattern.findall(text), repr(text)
    assert pretokenize_llama3("I'M 12345 (ok)\n\n  x") == [
        "I", "'M", " ", "123", "45", " (", "ok", ")\n\n", " ", " x"]


def test_saved_tokenizer_carries_the_chat_template(tmp_path):
    path, expect = write_tiny_gguf(tmp_path / "t.gguf")
    tok = read_gguf(path).tokenizer
    assert tok.chat_template == expect.chat_template
    tok.save(tmp_path / "ckpt")
    assert load_tokenizer(tmp_path / "ckpt").chat_template == CHATML
