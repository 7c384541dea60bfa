"""Every tokenizer kind is callable as Hugging Face's: tok(text) -> input_ids and
attention_mask, return_tensors="np", batches with padding and truncation, batch_decode, and
the *_token_id names; all from the shared base class."""

import json

import numpy as np
import pytest
from gguf_fixtures import tiny_spm_vocab, tiny_vocab

from minillm.errors import TokenizerError
from minillm.tokenizers import (
    TOKENIZERS,
    ByteLevelBPETokenizer,
    CharTokenizer,
    GGUFSentencePieceTokenizer,
    Tokenizer,
    train_tokenizer,
)
from minillm.tokenizers.bpe import BYTE_TO_UNICODE
from minillm.tokenizers.gpt2 import GPT2Tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. "


def char():
    return CharTokenizer.from_text(TEXT * 3)


def sentencepiece():
    return train_tokenizer("sentencepiece", (TEXT * 50 + "\n") * 4, vocab_size=300,
                           model_type="bpe")


def gpt2(tmp_path):
    vocab = {BYTE_TO_UNICODE[b]: b for b in range(256)}
    vocab["<|endoftext|>"] = 256
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return GPT2Tokenizer.from_directory(tmp_path)


def byte_level_bpe():
    tokens, types, merges = tiny_vocab()
    return ByteLevelBPETokenizer.from_token_list(tokens, merges, types, pre="smollm", eos_id=2,
                                                 bos_id=1, pad_id=0, unk_id=0)


def gguf_spm():
    pieces, scores, types = tiny_spm_vocab()
    return GGUFSentencePieceTokenizer(pieces, scores, types, add_bos=False)


MAKERS = {"char": char, "sentencepiece": sentencepiece, "gpt2": gpt2,
          "bpe": byte_level_bpe, "gguf_spm": gguf_spm}


@pytest.fixture(params=sorted(MAKERS))
def tok(request, tmp_path):
    make = MAKERS[request.param]
    return make(tmp_path) if request.param == "gpt2" else make()


def test_every_kind_is_covered():
    assert {c.kind for c in TOKENIZERS.values()} == set(MAKERS)
    assert all(c.__call__ is Tokenizer.__call__ for c in TOKENIZERS.values())  # one place


def test_call_single_text(tok):
    enc = tok("the lazy dog")
    ids = tok.encode("the lazy dog")
    assert enc["input_ids"] == enc.input_ids == ids and enc["attention_mask"] == [1] * len(ids)
    arr = tok("the lazy dog", return_tensors="np")
    assert arr["input_ids"].shape == (1, len(ids)) and arr["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(arr["input_ids"][0], ids)
    assert tok.decode(arr["input_ids"][0]) == tok.decode(ids)
    assert len(tok) == tok.vocab_size and tok.eos_token_id == tok.eos_id
    assert tok.bos_token_id == tok.bos_id and tok.pad_token_id == tok.pad_id


def test_call_batch_padding_and_truncation(tok):
    texts = ["the fox", "the quick brown dog"]
    rows = [tok.encode(t) for t in texts]
    enc = tok(texts)
    assert enc["input_ids"] == rows
    with pytest.raises(TokenizerError, match="padding=True"):
        tok(texts, return_tensors="np")
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    left = tok(texts, padding=True, return_tensors="np")
    n = max(map(len, rows))
    assert left["input_ids"].shape == left["attention_mask"].shape == (2, n)
    short = len(rows[0])
    np.testing.assert_array_equal(left["input_ids"][0], [pad] * (n - short) + rows[0])
    np.testing.assert_array_equal(left["attention_mask"][0], [0] * (n - short) + [1] * short)
    right = tok(texts, padding=True, padding_side="right")
    assert right["input_ids"][0] == rows[0] + [pad] * (n - short)
    assert tok.batch_decode(right["input_ids"])[1] == tok.decode(rows[1])
    cut = tok(texts, truncation=True, max_length=2)
    assert cut["input_ids"] == [r[:2] for r in rows]
    assert tok(texts, padding="max_length", max_length=n + 3)["attention_mask"][1][:3] == [0] * 3
    with pytest.raises(TokenizerError, match="NumPy"):
        tok("x", return_tensors="pt")
