"""GPT.from_pretrained / Llama.from_pretrained read minillm runs through minillm.load, and
model.save_pretrained writes a directory they (and minillm.load) read back."""

import json

import numpy as np
import pytest

import minillm as M
from minillm.checkpoints import run
from minillm.errors import CheckpointError
from minillm.models import GPT, GPTConfig, Llama, LlamaConfig
from minillm.tokenizers import CharTokenizer

TOK = CharTokenizer("abcdefghijkl")
IDS = np.arange(12).reshape(2, 6) % 13


def gpt(**kw):
    M.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16,
                         **kw)).eval()


def llama():
    M.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_kv_head=1,
                             n_embd=16, intermediate_size=24)).eval()


def logits(model):
    return model(IDS)[0].numpy()


def test_from_pretrained_reads_a_run_by_its_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = gpt(bias=False)  # the tiny config's setting
    run.save("out/shakespeare_char_tiny/best", model, tokenizer=TOK)
    got = GPT.from_pretrained("out/shakespeare_char_tiny")
    np.testing.assert_array_equal(logits(got), logits(model))


def test_a_missing_run_says_how_runs_are_made_and_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as e:
        GPT.from_pretrained("out/shakespeare_char_tiny")
    assert "minillm pretrain" in str(e.value) and str(tmp_path) in str(e.value)


def test_gpt_save_pretrained_round_trip(tmp_path):
    model = gpt(bias=False, tie_word_embeddings=False)
    names = model.save_pretrained(tmp_path / "m", tokenizer=TOK)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(names)
    back = GPT.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(logits(back), logits(model))
    loaded, tok = M.load(tmp_path / "m")
    assert tok.encode("abc") == TOK.encode("abc")
    np.testing.assert_array_equal(logits(loaded), logits(model))
    model.save_pretrained(tmp_path / "m")  # saving again over its own files is fine
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="notes.txt"):
        model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def test_gpt_save_pretrained_in_hugging_face_layout(tmp_path):
    model = gpt()
    model.save_pretrained(tmp_path / "hf", tokenizer=TOK, hf_format=True)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and "model" not in cfg
    np.testing.assert_array_equal(logits(GPT.from_pretrained(tmp_path / "hf")), logits(model))


def test_llama_save_pretrained_and_from_pretrained(tmp_path):
    model = llama()
    model.save_pretrained(tmp_path / "l")
    back = Llama.from_pretrained(tmp_path / "l")
    assert type(back) is Llama
    np.testing.assert_allclose(logits(back), logits(model), rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match="not a GPT"):
        GPT.from_pretrained(tmp_path / "l")
