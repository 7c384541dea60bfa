"""Chat fine-tuning end to end on a tiny random Llama: the demo data, the CLI, the adapter."""

import json

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm
from minillm.cli import main
from minillm.nn.lora import lora_layers
from minillm.nn.quant import named_quant_weights
from minillm.train.demo_chat import FACTS, HELDOUT_PHRASINGS, TRAIN_PHRASINGS, make_chat_demo
from minillm.train.evaluate import contains, read_questions
from minillm.train.finetune_chat import finetune_chat, total_weights


def test_demo_data_is_deterministic_and_heldout_is_new(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert make_chat_demo(a, seed=0) == {"train": len(FACTS) * TRAIN_PHRASINGS,
                                         "heldout": len(FACTS) * HELDOUT_PHRASINGS}
    make_chat_demo(b, seed=0)
    make_chat_demo(c, seed=1)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    train_q = {json.loads(ln)["messages"][0]["content"] for ln in open(a / "train.jsonl")}
    held = read_questions(a / "heldout.jsonl")
    assert all(m[-1]["content"] not in train_q for m, _ in held)  # new phrasings
    train_a = {json.loads(ln)["messages"][1]["content"] for ln in open(a / "train.jsonl")}
    assert all(any(contains(t, ans) for t in train_a) for _, ans in held)  # of taught facts


def test_finetune_chat_quant_base_cli_and_adapter(tmp_path, capsys):
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)
    data = tmp_path / "demo"
    assert main(["finetune-demo-data", "--task", "chat", "--out", str(data)]) == 0
    out = tmp_path / "run"
    assert main(["finetune", "--ckpt", str(gguf), "--dtype", "stored", "--data",
                 str(data / "train.jsonl"), "--eval", str(data / "heldout.jsonl"),
                 "--targets", "q,k,v,o,gate,up,down", "--rank", "4", "--epochs", "2",
                 "--batch-size", "16", "--lr", "3e-3", "--max-new-tokens", "4",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "before: held-out accuracy" in text and "after: held-out accuracy" in text
    s = json.loads((out / "summary.json").read_text())
    assert s["after"]["heldout_loss"] < s["before"]["heldout_loss"]
    assert s["trainable_params"] < s["total_params"]
    conf = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and len(conf["target_modules"]) == 7
    model, tok = minillm.load(out / "adapter")
    assert len(lora_layers(model)) == 14
    assert main(["eval", "--ckpt", str(out / "adapter"), "--data", str(data / "heldout.jsonl"),
                 "--max-new-tokens", "4"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out


def test_grad_checkpoint_run_logs_the_same_losses(tmp_path):
    """--grad-checkpoint changes memory, not the numbers: the same training losses (to float32
    rounding) and the peak RSS in the summary."""
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)
    make_chat_demo(tmp_path / "d")
    logs = []
    for ckpt in (False, True):
        out = tmp_path / f"o{int(ckpt)}"
        s = finetune_chat(gguf, tmp_path / "d" / "train.jsonl", dtype="stored", rank=4,
                          batch_size=8, max_steps=4, log_interval=1, out_dir=out,
                          progress=False, say=lambda *a: None, gradient_checkpointing=ckpt)
        assert s["gradient_checkpointing"] is ckpt and s["peak_rss_mib"] > 0
        logs.append([json.loads(ln)["train_loss"] for ln in open(out / "log.jsonl")
                     if "train_loss" in ln])
    assert len(logs[0]) == 4
    np.testing.assert_allclose(logs[0], logs[1], rtol=1e-5)


def test_full_finetune_needs_float_base(tmp_path):
    from minillm.errors import ConfigError

    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)
    make_chat_demo(tmp_path / "d")
    with pytest.raises(ConfigError, match="float32"):
        finetune_chat(gguf, tmp_path / "d" / "train.jsonl", dtype="stored", method="full",
                      out_dir=tmp_path / "o", progress=False, say=lambda *a: None)
    model, _ = minillm.load(gguf, dtype="stored")
    n = sum(w.shape[0] * w.shape[1] for _, w in named_quant_weights(model))
    assert total_weights(model) == model.num_parameters() + n


@pytest.mark.slow
def test_real_model_learns_the_demo_facts(tmp_path):
    """SmolLM2-135M-Instruct, LoRA on its Q8_0 base, on the demo data: held-out accuracy rises
    by at least 40 points (about 10 minutes on 2 cores)."""
    make_chat_demo(tmp_path / "d")
    s = finetune_chat("smollm2-135m-instruct", tmp_path / "d" / "train.jsonl", dtype="q8_0",
                      rank=16, alpha=32, targets="all", epochs=5, lr=2e-3, batch_size=8,
                      block_size=128, out_dir=tmp_path / "o",
                      eval_data=tmp_path / "d" / "heldout.jsonl", progress=False)
    assert s["after"]["heldout_accuracy"] >= s["before"]["heldout_accuracy"] + 0.4
    assert s["after"]["heldout_loss"] < s["before"]["heldout_loss"]
    assert np.isfinite(s["after"]["heldout_loss"])
