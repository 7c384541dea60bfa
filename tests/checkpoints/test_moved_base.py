"""A LoRA run whose base has moved: the adapter names its base (a path or a built-in name) and
its fingerprint; ``--base PATH_OR_NAME`` (``minillm.load(..., base=)``) points at the new place
for sample / chat / eval / serve and ``finetune --resume``; a wrong base or a missing one gets
one sentence."""

import shutil
import string

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm as M
from minillm.checkpoints import run as ckpt
from minillm.checkpoints.loader import is_adapter
from minillm.checkpoints.peft import save_peft
from minillm.cli import main
from minillm.errors import CheckpointError, ConfigError
from minillm.models import GPT, GPTConfig
from minillm.nn.lora import LoRAConfig, apply_lora, lora_layers
from minillm.tokenizers import CharTokenizer
from minillm.train.finetune import finetune

X = np.array([[5, 9, 40, 7, 100, 3]])


@pytest.fixture
def peft_run(tmp_path):
    """(adapter dir, its base's new place, logits of base + adapter): an adapter on a GGUF base
    saved, then the base moved away."""
    old = tmp_path / "models" / "tiny.gguf"
    old.parent.mkdir()
    write_tiny_gguf(old)
    model, _ = M.load(old)
    apply_lora(model, 4, 8.0, 0.0, "q,v,down")
    rng = np.random.default_rng(0)
    for _, m in lora_layers(model):
        m.lora_B.data = (rng.standard_normal(m.lora_B.shape) * 0.05).astype(np.float32)
    ref = model.eval()(X)[0].data.copy()
    adapter = tmp_path / "runs" / "sft_lora" / "adapter"
    save_peft(adapter, model, LoRAConfig(4, 8.0, 0.0, "q,v,down"), old, base_dtype="stored")
    new = tmp_path / "moved" / "tiny.gguf"
    new.parent.mkdir()
    shutil.move(old, new)
    return adapter, new, ref


def test_moved_base_needs_base_and_works_with_it(peft_run, tmp_path):
    adapter, new, ref = peft_run
    with pytest.raises(CheckpointError, match="--base"):
        M.load(adapter)
    assert is_adapter(adapter) and not is_adapter(new) and not is_adapter("smollm2")
    model, _ = M.load(adapter, base=new)
    np.testing.assert_allclose(model(X)[0].data, ref, rtol=1e-4, atol=1e-5)  # merged: rounding
    moved_run = tmp_path / "elsewhere" / "sft_lora"
    shutil.move(adapter.parent, moved_run)  # the run folder moved too
    model, _ = M.load(moved_run / "adapter", base=new)
    np.testing.assert_allclose(model(X)[0].data, ref, rtol=1e-4, atol=1e-5)  # merged: rounding


def test_wrong_base_is_one_sentence(peft_run, tmp_path):
    adapter, _, _ = peft_run
    other = tmp_path / "other.gguf"
    write_tiny_gguf(other, seed=1)
    with pytest.raises(CheckpointError, match="other base weights than those of the base passed"):
        M.load(adapter, base=other)
    with pytest.raises(ConfigError, match="not an adapter"):
        M.load(other, base=other)


def test_cli_sample_and_eval_take_base(peft_run, tmp_path, capsys):
    adapter, new, _ = peft_run
    argv = ["sample", "--ckpt", str(adapter), "--prompt", "ab", "--max-new-tokens", "3",
            "--greedy"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--base" in err
    assert main(argv + ["--base", str(new)]) == 0
    other = tmp_path / "other.gguf"
    write_tiny_gguf(other, seed=1)
    assert main(argv + ["--base", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other base weights" in err


def test_serve_refuses_base_without_adapter(tmp_path, capsys):
    pytest.importorskip("uvicorn")
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    assert main(["serve", "--ckpt", str(path), "--base", str(path), "--port", "0"]) == 2
    assert "no served model" in capsys.readouterr().err


TOK = CharTokenizer(string.ascii_letters + " :\n.,'!?")


def test_finetune_resume_with_moved_base(tmp_path):
    """A GPT LoRA fine-tune (minillm's adapter layout) resumed after its base moved: --base
    with the new place continues it; a different base is refused by fingerprint."""
    M.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2,
                          n_embd=16))
    ckpt.save(tmp_path / "base", model, tokenizer=TOK)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(f'{{"prompt": "ab {i}", "response": "cd"}}\n'.replace(str(i), "x" * (i % 3))
                            for i in range(12)))
    opts = dict(task="sft", method="lora", rank=2, batch_size=4, val_fraction=0.25, lr=3e-3,
                epochs=2, progress=False)

    def stop_after_epoch_1(msg):  # said before epoch 2's checkpoint is written
        if msg.startswith("epoch 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "base", data, out_dir=tmp_path / "run", say=stop_after_epoch_1,
                 **opts)
    shutil.move(tmp_path / "base", tmp_path / "base_moved")
    with pytest.raises(CheckpointError, match="--base"):
        M.load(tmp_path / "run")
    said = []
    s = finetune(tmp_path / "base_moved", data, out_dir=tmp_path / "run", resume=True,
                 say=said.append, **opts)
    assert s["steps"] == 2 * 3 and any(m.startswith("resuming") for m in said)
    M.load(tmp_path / "run", base=tmp_path / "base_moved")  # the adapter fits its base
    M.manual_seed(5)
    ckpt.save(tmp_path / "other", GPT(model.config), tokenizer=TOK)
    with pytest.raises(CheckpointError, match="other base weights"):
        finetune(tmp_path / "other", data, out_dir=tmp_path / "run", resume=True,
                 say=lambda *a: None, **opts)


# ----------------------------------------------------------------------------- export --merge
@pytest.mark.parametrize("fmt,dtype", [("gguf", "stored"), ("gguf", "float32"), ("hf", None)])
def test_export_merge_gives_base_plus_adapter_logits(peft_run, tmp_path, fmt, dtype):
    """The adapter over a quantized base, merged and written as GGUF (adapted layers float32,
    the others in their blocks, or everything float32) or HF: the file loads and gives the
    logits of base + adapter, to float32 rounding."""
    adapter, new, ref = peft_run
    out = tmp_path / ("merged.gguf" if fmt == "gguf" else "merged_hf")
    argv = ["export", "--ckpt", str(adapter), "--base", str(new), "--out", str(out),
            "--format", fmt] + (["--dtype", dtype] if dtype else [])
    assert main(argv[:3] + argv[5:]) == 2  # the base moved: without --base, one sentence
    assert main(argv) == 2  # an adapter on a quantized base needs --merge
    assert main(argv + ["--merge"]) == 0
    model, _ = M.load(out)
    assert not lora_layers(model)
    np.testing.assert_allclose(model(X)[0].data, ref, rtol=1e-4, atol=1e-5)


def test_export_merge_requires_an_adapter(tmp_path, capsys):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    assert main(["export", "--ckpt", str(path), "--merge", "--out", str(tmp_path / "o")]) == 2
    assert "is none" in capsys.readouterr().err
