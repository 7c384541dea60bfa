"""Tokenizers: exact round trips, special ids, errors, save/load (minillm.tokenizers)."""

import json
import random

import numpy as np
import pytest

from minillm.errors import MinillmError, TokenizerError
from minillm.tokenizers import (
    TOKENIZERS,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

EOT = "<|endoftext|>"
WORDS = ("the king queen lord lady speak hear good night day love war peace sword crown "
         "thou thee thy art hath doth shall will would noble gentle brother sister father "
         "mother heaven earth blood honour death life heart mind soul fair sweet").split()
FOREIGN = ["café", "naïve", "Ærø", "straße", "Ελλάδα", "москва", "東京", "😀"]


def synthetic_corpus(n_lines=400, seed=0):
    """~14 KB of verse-like lines with blank lines, indentation, tabs, trailing spaces, unicode."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        words = [rng.choice(WORDS) if rng.random() > 0.05 else rng.choice(FOREIGN)
                 for _ in range(rng.randint(0, 12))]
        line = " ".join(words).capitalize()
        if words:
            line += rng.choice([".", ",", "!", "?", ";", ":"])
        if i % 7 == 0:
            line = "    " + line
        if i % 11 == 0:
            line += "  "
        if i % 13 == 0:
            line = line.replace(" ", "\t", 1)
        lines.append(line)
    return "\n".join(lines) + "\n"


CORPUS = synthetic_corpus()
# Text the tokenizers never saw: CRLF, blank lines, runs of spaces, characters not in the corpus.
UNSEEN = "Hello,  World!\r\n\n\n   indented\tTAB  \nZürich ｆｕｌｌ 〜 ∑ 🎉\u200b end  "


# -- char ------------------------------------------------------------------------------------
def test_char_vocab_is_sorted_characters_then_eos():
    tok = CharTokenizer.from_text("hello world\n")
    assert tok.chars == ["\n", " ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 10
    assert tok.eos_id == tok.bos_id == 9
    assert tok.pad_id is None
    assert tok.encode("hello") == [4, 3, 5, 5, 6]
    assert tok.decode([4, 3, 5, 5, 6]) == "hello"


def test_char_round_trip_and_eos_decodes_to_empty():
    tok = CharTokenizer.from_text(CORPUS)
    assert tok.vocab_size == len(set(CORPUS)) + 1
    ids = tok.encode(CORPUS)
    assert len(ids) == len(CORPUS)
    assert tok.decode(ids) == CORPUS
    assert tok.decode(ids[:5] + [tok.eos_id] + ids[5:9]) == CORPUS[:9]
    assert tok.decode(np.array(ids[:20], dtype=np.uint16)) == CORPUS[:20]  # numpy ids work
    # A literal "<|endoftext|>" in text is characters, never the special id.
    tok2 = CharTokenizer.from_text("<|endoftext|> and more")
    assert tok2.eos_id not in tok2.encode(EOT)
    assert tok2.decode(tok2.encode(EOT)) == EOT


def test_char_unknown_characters_are_named_in_order_of_appearance():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TokenizerError) as e:
        tok.encode("abXcY🎉XX")
    msg = str(e.value)
    assert "3 character(s)" in msg
    assert msg.index("'X'") < msg.index("'Y'") < msg.index("'🎉'")
    assert isinstance(e.value, MinillmError)


def test_char_decode_rejects_ids_outside_the_vocabulary():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([0, 4])
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([-1])


def test_char_save_load_round_trip(tmp_path):
    tok = CharTokenizer.from_text(CORPUS)
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    assert config["kind"] == "char"
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.chars == tok.chars and loaded.eos_id == tok.eos_id
    assert loaded.encode(CORPUS) == tok.encode(CORPUS)


# -- sentencepiece ---------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp(request):
    return train_tokenizer("sentencepiece", CORPUS, vocab_size=420, model_type=request.param)


def test_sentencepiece_round_trips_corpus_and_unseen_text(sp):
    assert sp.vocab_size == 420
    ids = sp.encode(CORPUS)
    assert sp.decode(ids) == CORPUS
    assert len(ids) < 0.6 * len(CORPUS)  # it learned real subwords, not just characters
    for text in [UNSEEN, "\n", "  ", "", "a\n\n\nb", EOT]:
        assert sp.decode(sp.encode(text)) == text, repr(text)


def test_sentencepiece_special_ids(sp):
    assert sp.eos_id == sp.bos_id == 1
    assert sp.pad_id is None
    assert sp.id_to_piece(sp.eos_id) == EOT
    assert sp.decode([sp.eos_id]) == ""
    assert sp.eos_id not in sp.encode("x " + EOT + " y")  # literal text is not the special
    assert sp.encode("\n") == [2]  # a newline is always one token of its own
    a, b = sp.encode("good night"), sp.encode("sweet heart")
    assert sp.decode(a + [sp.eos_id] + b) == "good nightsweet heart"


def test_sentencepiece_save_load_round_trip(sp, tmp_path):
    sp.save(tmp_path)
    assert (tmp_path / "tokenizer.model").is_file()
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.model_type == sp.model_type
    assert loaded.encode(CORPUS + UNSEEN) == sp.encode(CORPUS + UNSEEN)
    assert loaded.eos_id == sp.eos_id and loaded.vocab_size == sp.vocab_size
    # The saved model is a plain SentencePiece model file.
    plain = SentencePieceTokenizer.from_model_file(tmp_path / "tokenizer.model")
    assert plain.encode("the") == sp.encode("the")


def test_sentencepiece_corrupt_model_file_is_detected(sp, tmp_path):
    sp.save(tmp_path)
    model = tmp_path / "tokenizer.model"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(tmp_path)
    model.unlink()
    with pytest.raises(TokenizerError, match="missing"):
        load_tokenizer(tmp_path)


def test_sentencepiece_training_is_deterministic():
    a = train_tokenizer("sentencepiece", CORPUS, vocab_size=400, model_type="unigram")
    b = train_tokenizer("sentencepiece", CORPUS, vocab_size=400, model_type="unigram")
    assert a.model_proto == b.model_proto


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_vocab_too_large_names_the_limit(model_type):
    with pytest.raises(TokenizerError) as e:
        train_tokenizer("sentencepiece", CORPUS, vocab_size=20000, model_type=model_type)
    msg = str(e.value)
    assert "20000" in msg and "smaller --vocab-size" in msg
    limit = int(msg.split("at most ")[1].split()[0])
    assert 300 < limit < 20000
    # The size it names really works.
    tok = train_tokenizer("sentencepiece", CORPUS, vocab_size=limit, model_type=model_type)
    assert tok.vocab_size == limit


def test_sentencepiece_vocab_too_small_says_how_many_are_needed():
    with pytest.raises(TokenizerError, match=r"at least \d+ ids.*larger --vocab-size"):
        train_tokenizer("sentencepiece", CORPUS, vocab_size=100)


def test_sentencepiece_rejects_bad_options_and_text():
    with pytest.raises(TokenizerError, match="model type"):
        train_tokenizer("sentencepiece", CORPUS, vocab_size=400, model_type="word")
    with pytest.raises(TokenizerError, match="empty"):
        train_tokenizer("sentencepiece", " \n\n ", vocab_size=400)
    with pytest.raises(TokenizerError, match="no usable training lines"):
        train_tokenizer("sentencepiece", "x" * 70000, vocab_size=300)


def test_sentencepiece_rejects_its_own_space_symbol(sp):
    with pytest.raises(TokenizerError, match="U\\+2581"):
        sp.encode("a\u2581b")


def test_sentencepiece_without_byte_fallback_names_unknown_characters():
    tok = train_tokenizer("sentencepiece", CORPUS, vocab_size=150, byte_fallback=False,
                          character_coverage=1.0)
    assert tok.decode(tok.encode(CORPUS)) == CORPUS
    with pytest.raises(TokenizerError) as e:
        tok.encode("the Ω king ∑")
    assert "'Ω'" in str(e.value) and "'∑'" in str(e.value) and "byte_fallback" in str(e.value)


# -- the registry and loading ----------------------------------------------------------------
def test_registry_and_train_from_files(tmp_path):
    assert TOKENIZERS["char"] is CharTokenizer
    assert TOKENIZERS["sentencepiece"] is SentencePieceTokenizer
    assert all(issubclass(c, Tokenizer) and TOKENIZERS[c.kind] is c for c in TOKENIZERS.values())
    (tmp_path / "a.txt").write_text("abc\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("xyz", encoding="utf-8")
    tok = train_tokenizer("char", [tmp_path / "a.txt", tmp_path / "b.txt"])
    assert tok.chars == ["\n", "a", "b", "c", "x", "y", "z"]
    (tmp_path / "bad.txt").write_bytes(b"ok\xffno")
    with pytest.raises(TokenizerError, match="offset 2"):
        train_tokenizer("char", [tmp_path / "bad.txt"])
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        train_tokenizer("wordpiece", "abc")


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.json is missing"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"kind": "magic", "data": {}}))
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'magic'"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"kind": "char", "data": {}}))
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(tmp_path)
