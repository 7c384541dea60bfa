"""minillm.load: one loader for every kind of input (a run folder, a checkpoint directory, a LoRA
fine-tune run, a Hugging Face GPT-2 directory, a .gguf file, a built-in name), one sentence for
anything else, and GPT.from_pretrained reading through it."""


import numpy as np
import pytest

import minillm as M
import minillm.checkpoints
from minillm.checkpoints import loader
from minillm.checkpoints import run as ckpt
from minillm.checkpoints.adapter import save_adapter
from minillm.checkpoints.hf_gpt2 import export_hf
from minillm.errors import CheckpointError, ConfigError
from minillm.models import GPT, GPTConfig
from minillm.nn.lora import LoRAConfig, apply_lora, lora_layers
from minillm.tokenizers import CharTokenizer

CFG = {"vocab_size": 13, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16}
IDX = np.arange(16).reshape(2, 8) % 13
TOK = CharTokenizer("abcdefghijkl")  # 12 chars + eos = 13


def make(seed=0, **kw):
    M.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, **kw})).eval()


def logits(model):
    return model(IDX)[0].numpy()


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as pretrain leaves it: best/ (seed 0) and last/ (seed 1), with tokenizer."""
    out = tmp_path / "run"
    ckpt.save(out / "best", make(0), tokenizer=TOK)
    ckpt.save(out / "last", make(1), tokenizer=TOK)
    return out


def test_run_folder_loads_best_then_last(run_dir):
    model, tok = M.load(run_dir)
    assert isinstance(model, GPT) and not model.training
    assert tok.encode("abc") == TOK.encode("abc")
    np.testing.assert_array_equal(logits(model), logits(make(0)))  # best/
    np.testing.assert_array_equal(logits(M.load(run_dir / "last")[0]), logits(make(1)))
    ckpt.save(run_dir / "best", make(2), tokenizer=TOK)
    (run_dir / "best").rename(run_dir / "elsewhere")
    np.testing.assert_array_equal(logits(M.load(run_dir)[0]), logits(make(1)))  # no best/: last/


def test_run_folder_recovers_a_checkpoint_moved_aside_by_a_crash(run_dir):
    (run_dir / "best").rename(run_dir / "gone")
    (run_dir / "last").rename(run_dir / ".last.old-deadbeef")  # killed between the two renames
    np.testing.assert_array_equal(logits(M.load(run_dir)[0]), logits(make(1)))
    assert (run_dir / "last" / "model.safetensors").is_file()


def test_checkpoint_dir_with_dropout_override(tmp_path):
    ckpt.save(tmp_path / "ck", make(0, dropout=0.1), tokenizer=TOK)
    assert M.load(tmp_path / "ck")[0].config.dropout == 0.1
    model, _ = M.load(str(tmp_path / "ck"), dropout=0.0)  # a str path works as well as a Path
    assert model.config.dropout == 0.0
    np.testing.assert_array_equal(logits(model), logits(make(0)))


def test_hf_directory(tmp_path):
    model = make(3)
    export_hf(model, TOK, tmp_path / "hf")
    got, tok = M.load(tmp_path / "hf")
    assert isinstance(got, GPT) and not got.training and tok.encode("kl") == TOK.encode("kl")
    np.testing.assert_allclose(logits(got), logits(model), rtol=1e-6, atol=1e-6)


def test_lora_run_loads_base_and_merged_adapter(tmp_path):
    ckpt.save(tmp_path / "base", make(), tokenizer=TOK)
    m = make()
    cfg = LoRAConfig(rank=2, alpha=4, targets="attn")
    apply_lora(m, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets)
    for _, layer in lora_layers(m):
        layer.lora_B.data = np.full(layer.lora_B.shape, 0.05, layer.lora_B.dtype)
    want = logits(m)
    save_adapter(tmp_path / "ft" / "best", m, cfg, tmp_path / "base")
    model, tok = M.load(tmp_path / "ft")
    assert tok.vocab_size == CFG["vocab_size"] and all(layer.merged for _, layer in lora_layers(model))
    np.testing.assert_allclose(logits(model), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, logits(make()))  # the adapter does change the model


def _one_sentence(message):
    assert "\n" not in message and "Traceback" not in message
    assert message.count(". ") == 0  # one sentence (a path may hold dots, not ". ")


def test_unknown_path_is_one_sentence_saying_what_is_accepted(tmp_path):
    with pytest.raises(CheckpointError) as e:
        M.load(tmp_path / "nope")
    msg = str(e.value)
    _one_sentence(msg)
    assert "no checkpoint at" in msg and loader.ACCEPTED in msg
    (tmp_path / "empty").mkdir()  # an existing folder without any checkpoint
    with pytest.raises(CheckpointError, match="holds no checkpoint") as e:
        M.load(tmp_path / "empty")
    _one_sentence(str(e.value))
    assert loader.ACCEPTED in str(e.value)
    (tmp_path / "notes.txt").write_text("hi")  # a file that is no format minillm reads
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        M.load(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="unknown load options"):
        M.load(tmp_path / "nope", quantize="q8")


def test_gguf_path_goes_to_load_gguf_with_its_options(monkeypatch, tmp_path):
    calls = []

    def load_gguf(path, **options):
        calls.append((path, options))
        return "model", "tokenizer"

    monkeypatch.setattr(loader, "load_gguf", load_gguf)
    assert M.load(str(tmp_path / "m.gguf"), dtype="q8_0") == ("model", "tokenizer")
    assert calls == [(tmp_path / "m.gguf", {"device": "cpu", "dtype": "q8_0"})]


def test_builtin_names(monkeypatch, run_dir):
    with pytest.raises(CheckpointError, match="'tiny-run' is not a built-in model; built-in"):
        M.load("tiny-run")
    monkeypatch.setattr(loader.builtin, "resolve",
                        lambda name: run_dir if name == "tiny-run" else None)
    np.testing.assert_array_equal(logits(M.load("tiny-run")[0]), logits(make(0)))


def test_gpt_from_pretrained_reads_a_minillm_run(run_dir):
    model = GPT.from_pretrained(run_dir)
    assert type(model) is GPT and not model.training and model.config.dropout == 0.0
    np.testing.assert_array_equal(logits(model), logits(M.load(run_dir)[0]))
    assert GPT.from_pretrained(run_dir / "last", dropout=0.2).config.dropout == 0.2
