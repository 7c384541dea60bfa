"""The GGUF SentencePiece-style BPE (minillm.tokenizers.gguf_spm) against the sentencepiece
library itself: a BPE model trained here, its pieces, scores and types handed over as a GGUF
file would, must encode every string to the same ids."""

import io
import random

import pytest
from gguf_fixtures import CORPUS

from minillm.errors import TokenizerError
from minillm.tokenizers import load_tokenizer
from minillm.tokenizers.gguf_spm import GGUFSentencePieceTokenizer, spm_merge

spm = pytest.importorskip("sentencepiece")

TEXTS = [
    "Hello world", "The capital of France is Paris.", "  two leading spaces", "trailing  ",
    "a  b   c", "12345 + 678", "naïve café", "日本語のテキスト", "emoji 🤖 here", "ÿ",
    "It's they're", "x", "", "tabs\there",
]


@pytest.fixture(scope="module")
def pair():
    model = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((CORPUS * 3).split("\n")), model_writer=model, vocab_size=320,
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=0.98,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()
    types = [3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i)
             else 5 if sp.is_unused(i) else 1 for i in range(n)]
    tok = GGUFSentencePieceTokenizer([sp.id_to_piece(i) for i in range(n)],
                                     [sp.get_score(i) for i in range(n)], types, add_bos=False)
    return sp, tok


@pytest.mark.parametrize("text", TEXTS)
def test_same_ids_as_sentencepiece(pair, text):
    sp, tok = pair
    assert tok.encode(text) == sp.encode(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text))


def test_random_strings_match_sentencepiece(pair):
    sp, tok = pair
    rng = random.Random(3)
    alphabet = list("the quick brown fox PARIS 0123 ,.!?'") + ["é", "日", "🤖", "  "]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        assert tok.encode(text) == sp.encode(text), repr(text)
        assert tok.decode(tok.encode(text)) == text


def test_bos_specials_and_persistence(pair, tmp_path):
    sp, tok = pair
    with_bos = GGUFSentencePieceTokenizer(tok.tokens, tok.scores, tok.token_types)
    ids = with_bos.encode("Hello</s> world")
    assert ids[0] == 1 and 2 in ids
    i = ids.index(2)
    assert ids[1:i] == sp.encode("Hello") and ids[i + 1:] == sp.encode(" world")
    assert with_bos.decode(ids) == "Hello world"  # control pieces decode to ""
    assert 2 not in with_bos.encode("Hello</s>", allowed_special=())
    with_bos.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert back.encode("Hello</s> world") == ids and back.vocab_size == tok.vocab_size


def test_merge_order_and_errors():
    # "ab" scores higher than "bc": "abc" -> "ab" + "c", and the leftmost wins a tie
    assert spm_merge(list("abc"), {"ab": -1.0, "bc": -2.0}) == ["ab", "c"]
    assert spm_merge(list("abc"), {"ab": -2.0, "bc": -1.0}) == ["a", "bc"]
    assert spm_merge(list("aaa"), {"aa": -1.0}) == ["aa", "a"]
    with pytest.raises(TokenizerError, match="equally many"):
        GGUFSentencePieceTokenizer(["a", "b"], [0.0], None)
    no_fallback = GGUFSentencePieceTokenizer(["<unk>", "<s>", "</s>", "\u2581a"],
                                             [0, 0, 0, -1.0], [2, 3, 3, 1], add_bos=False)
    assert no_fallback.encode("a") == [3] and no_fallback.encode("é") == [0, 0]
