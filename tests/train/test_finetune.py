"""Fine-tuning: SFT targets and truncation, classification learns, bad input gets one clear
sentence, checkpoints and adapters load back, and the CLI runs end to end (tiny models)."""

import json
import string

import numpy as np
import pytest

import minillm as M
from minillm import functional as F
from minillm.checkpoints import run as ckpt
from minillm.cli import main
from minillm.errors import ConfigError, DataError
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer
from minillm.train import tasks
from minillm.train.demo_data import make_demo_data
from minillm.train.finetune import (
    classify_texts,
    finetune,
    freeze_except_last,
    load_classifier,
    sft_val_loss,
)

TOK = CharTokenizer(string.ascii_letters + " :\n.,'!?")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def base(tmp_path):
    """A tiny random GPT checkpoint with a char tokenizer."""
    M.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=TOK.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32, bias=True
        )
    )
    ckpt.save(tmp_path / "base", model, tokenizer=TOK)
    return tmp_path / "base"


def sft_records(n=24, seed=0):
    rng = np.random.default_rng(seed)
    words = ["ab", "cd", "hello", "world", "cat", "dog"]
    return [
        {"prompt": " ".join(rng.choice(words, 2)), "response": " ".join(rng.choice(words, 2))}
        for _ in range(n)
    ]


def contains_z_records(n, seed):
    """Separable task: label is whether the text contains 'z' (letters a-d otherwise)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        chars = list(rng.choice(list("abcd"), rng.integers(4, 11)))
        if i % 2:
            chars[rng.integers(len(chars))] = "z"
        out.append({"text": "".join(chars), "label": "yes" if i % 2 else "no"})
    return out


# ----------------------------------------------------------------------------- SFT targets
def test_sft_targets_only_response_and_eos():
    ids, n_prompt = tasks.sft_example(TOK, "hi there", "ok", block_size=64)
    prompt_ids = TOK.encode("PROMPT:\nhi there\nRESPONSE:\n")
    assert ids == prompt_ids + TOK.encode("ok") + [TOK.eos_id] and n_prompt == len(prompt_ids)
    x, y = tasks.sft_targets(ids, n_prompt)
    assert np.all(y[: n_prompt - 1] == tasks.IGNORE)  # targets that are prompt tokens
    assert list(y[n_prompt - 1 :]) == TOK.encode("ok") + [TOK.eos_id]  # response + eos
    np.testing.assert_array_equal(x, ids[:-1])
    # padding: pad positions are ignored too
    x2, y2 = tasks.sft_targets(*tasks.sft_example(TOK, "a", "b", 64))
    xb, yb = tasks.pad_batch([(x, y), (x2, y2)], pad_id=TOK.eos_id)
    assert xb.shape == yb.shape == (2, len(x)) and np.all(yb[1, len(y2) :] == tasks.IGNORE)


def test_sft_loss_counts_only_response_tokens(base):
    model, _ = M.load(base)
    exs = [
        tasks.sft_targets(*tasks.sft_example(TOK, p, r, 48))
        for p, r in [("hello world", "cat"), ("a", "dog dog")]
    ]
    x, y = tasks.pad_batch(exs, TOK.eos_id)
    logits, loss = model(x, y)
    lg = logits.numpy().astype(np.float64)
    logp = lg - lg.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = y != tasks.IGNORE
    want = -logp[keep, y[keep]].mean()  # mean over response (+ eos) positions only
    np.testing.assert_allclose(loss.item(), want, rtol=1e-5)
    # whatever the logits at prompt/pad positions are, the loss is the same
    noisy = lg.copy()
    noisy[~keep] = np.random.default_rng(0).standard_normal(noisy[~keep].shape) * 10
    np.testing.assert_allclose(F.cross_entropy(M.Tensor(noisy), y).item(), want, rtol=1e-9)


def test_sft_truncation_keeps_response_and_marker():
    ids, n_prompt = tasks.sft_example(TOK, "x" * 100, "short", block_size=40)
    assert len(ids) == 41
    assert TOK.decode(ids[:n_prompt]).endswith("x\nRESPONSE:\n")  # prompt cut from the left
    assert ids[n_prompt:] == TOK.encode("short") + [TOK.eos_id]
    ids, n_prompt = tasks.sft_example(TOK, "p", "y" * 100, block_size=40)
    assert len(ids) == 41 and n_prompt == len(TOK.encode("PROMPT:\np\nRESPONSE:\n"))
    assert TOK.eos_id not in ids  # the response was cut from the right


# ----------------------------------------------------------------------------- bad input
def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "a", "response": \n')
    with pytest.raises(DataError, match=r"d\.jsonl line 3 is not valid JSON"):
        tasks.read_jsonl(p, ("prompt", "response"))
    p.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(DataError, match=r"line 2 lacks the key 'response'"):
        tasks.read_jsonl(p, ("prompt", "response"))
    p.write_text('{"prompt": "a", "response": "~"}\n')
    with pytest.raises(DataError, match="line 1"):
        tasks.load_sft(p, TOK, 32)
    assert main(["finetune", "--base", str(tmp_path), "--data", str(p)]) == 2


def test_unseen_label_errors(tmp_path, base):
    train = write_jsonl(tmp_path / "t.jsonl", contains_z_records(8, 0))
    val = write_jsonl(
        tmp_path / "v.jsonl", [{"text": "ab", "label": "no"}, {"text": "zz", "label": "maybe"}]
    )
    with pytest.raises(
        tasks.LabelError, match=r"line 2 has label 'maybe', which the classifier was not trained on"
    ):
        finetune(
            base,
            train,
            task="classify",
            val_data=val,
            epochs=1,
            out_dir=tmp_path / "o",
            progress=False,
            say=lambda *a: None,
        )


def test_freeze_except_last(base):
    model, _ = M.load(base)
    n = freeze_except_last(model, 1)
    names = {k for k, p in model.named_parameters() if p.requires_grad}
    assert names == {k for k in model.state_dict() if k.startswith(("h.1.", "ln_f.", "wte."))}
    assert n == sum(model.state_dict()[k].size for k in names)
    freeze_except_last(model, 1, train_head=False)
    assert not model.wte.weight.requires_grad
    with pytest.raises(ConfigError):
        freeze_except_last(model, 3)


# ----------------------------------------------------------------------------- end to end
def quiet_finetune(base, data, out_dir, **options):
    """``finetune`` of ``base`` on ``data`` into ``out_dir`` at lr 3e-3, printing nothing;
    returns its summary."""
    return finetune(base, data, out_dir=out_dir, lr=3e-3, progress=False, say=lambda *a: None,
                    **options)


def test_lora_sft_run_saves_adapter_that_reloads(tmp_path, base):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(24))
    base_bytes = (base / "model.safetensors").read_bytes()
    s = quiet_finetune(base, data, tmp_path / "out", task="sft", method="lora", rank=2, epochs=2,
                       batch_size=8, val_fraction=0.25)
    assert s["after"]["val_loss"] < s["before"]["val_loss"]
    assert s["trainable_params"] < s["total_params"] / 5
    assert (base / "model.safetensors").read_bytes() == base_bytes
    cfg = json.loads((tmp_path / "out" / "best" / "adapter_config.json").read_text())
    assert cfg["rank"] == 2 and cfg["base"] == str(base.resolve()) and cfg["task"] == "sft"
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and "val_loss" in log[-1]
    # the saved best adapter, loaded through minillm.load, gives the logged val loss
    model, tok = M.load(tmp_path / "out")
    val = [
        tasks.sft_targets(*tasks.sft_example(tok, r["prompt"], r["response"], 48))
        for r in sft_records(24)
    ]
    _, va = tasks.split_indices(24, 0.25, np.random.default_rng(1337))
    np.testing.assert_allclose(
        sft_val_loss(model, [val[i] for i in va], 8, tok.eos_id), s["best"]["val_loss"], rtol=1e-4
    )


def test_classification_learns_separable_task(tmp_path, base):
    data = write_jsonl(tmp_path / "cls.jsonl", contains_z_records(320, 0))
    s = quiet_finetune(base, data, tmp_path / "out", task="classify", method="full", epochs=3,
                       batch_size=16, val_fraction=0.2)
    assert s["before"]["val_acc"] < 0.8 and s["best"]["val_acc"] >= 0.95
    net, tok, labels = load_classifier(tmp_path / "out")
    assert labels == ["no", "yes"]
    probs = classify_texts(net, tok, labels, ["abcdabzd", "abcdabcd"])
    assert next(iter(probs[0])) == "yes" and next(iter(probs[1])) == "no"


def cli_finetune(base, data, out, *options):
    """``minillm finetune`` of ``base`` on ``data`` into ``out`` with ``options``, no progress
    bar; returns the exit status."""
    return main(["finetune", "--base", str(base), "--data", str(data), *options,
                 "--out", str(out), "--no-progress"])


def test_cli_finetune_and_classify(tmp_path, base, capsys):
    data = write_jsonl(tmp_path / "cls.jsonl", contains_z_records(40, 1))
    out = tmp_path / "run"
    assert cli_finetune(base, data, out, "--task", "classify", "--method", "lora", "--rank", "2",
                        "--epochs", "1", "--batch-size", "8", "--targets", "attn") == 0
    assert (out / "best" / "adapter.safetensors").exists() and (
        out / "last" / "adapter_config.json"
    ).exists()
    assert main(["classify", "--ckpt", str(out), "--text", "abzd"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.split("\t")[0] in ("yes", "no") and "yes=" in line and "no=" in line
    assert main(["classify", "--ckpt", str(base), "--text", "ab"]) == 2  # not a classifier


def test_cli_full_sft_checkpoint_is_samplable(tmp_path, base):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(12))
    out = tmp_path / "full"
    assert cli_finetune(base, data, out, "--method", "full", "--freeze-last-k", "1", "--epochs",
                        "1", "--batch-size", "4", "--block-size", "40") == 0
    model, tok = M.load(out)
    assert model.config.block_size == 40 and tok.vocab_size == TOK.vocab_size
    base_model, _ = M.load(base)
    assert np.array_equal(
        model.h[0].attn.c_attn.weight.data, base_model.h[0].attn.c_attn.weight.data
    )
    assert not np.array_equal(
        model.h[1].attn.c_attn.weight.data, base_model.h[1].attn.c_attn.weight.data
    )


def test_demo_data_is_deterministic(tmp_path):
    speech = "{}:\nFirst line of {} here,\nand the second line too.\nA third one.\n\n"
    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "".join(
            speech.format(n, n)
            for n in ["ROMEO", "MENENIUS", "PETRUCHIO", "DUKE VINCENTIO", "NURSE"] * 3
        )
    )
    a = make_demo_data(tmp_path / "a", corpus=corpus, seed=3)
    make_demo_data(tmp_path / "b", corpus=corpus, seed=3)
    for f in ("sft.jsonl", "classify.jsonl"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "b" / f).read_text()
    sft = [json.loads(line) for line in (tmp_path / "a" / "sft.jsonl").read_text().splitlines()]
    assert a["sft"] == len(sft) == 15 and sft[0]["prompt"].startswith("Continue the speech of ")
    cls = [
        json.loads(line) for line in (tmp_path / "a" / "classify.jsonl").read_text().splitlines()
    ]
    assert sorted({r["label"] for r in cls}) == sorted(
        ["ROMEO", "MENENIUS", "PETRUCHIO", "DUKE VINCENTIO"]
    )
