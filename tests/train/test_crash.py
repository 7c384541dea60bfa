"""Crash injection: a ``minillm pretrain`` subprocess is ended (``os._exit``, as ``kill -9``) at
each named write point of a checkpoint write and of the log rewrite (the test-only hook
``MINILLM_CRASH_AT=NAME:N`` in minillm.checkpoints.atomic), then ``--resume`` finishes the run.
The result must equal an uninterrupted run exactly: the same weight and optimizer bytes, the same
logged losses, and no leftover temporary files."""

import json
import os
import string
import subprocess
import sys

import pytest

from minillm.checkpoints.atomic import CRASH_EXIT
from minillm.data import prepare
from tests.train.test_pretrain import TINY, make_corpus

RUN = ["--max_iters=6", "--eval_interval=2", "--lr_decay_iters=6", "--dropout=0.1", "--no-progress",
       *TINY]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    corpus = make_corpus(d / "corpus.txt")
    with open(corpus, "a") as f:  # every printable character, for the fine-tuning template
        f.write(string.printable.replace("\x0b", "").replace("\x0c", "") + "\n")
    prepare(d / "data", corpus=corpus, progress=False)
    return d / "data"


def pretrain(data_dir, out, *extra, crash=None):
    env = dict(os.environ)
    env.pop("MINILLM_CRASH_AT", None)
    if crash:
        env["MINILLM_CRASH_AT"] = crash
    args = [sys.executable, "-m", "minillm", "pretrain", f"--data_dir={data_dir}", f"--out_dir={out}",
            *RUN, *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def result(out):
    """What an exact resume must reproduce: weights and optimizer bytes of best/ and last/, and
    every logged loss by step."""
    files = {f"{sub}/{name}": (out / sub / name).read_bytes()
             for sub in ("best", "last") for name in ("model.safetensors", "optimizer.safetensors")}
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = sorted((r["step"], k, r[k]) for r in recs for k in ("loss", "train_loss", "val_loss") if k in r)
    return files, losses


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    p = pretrain(data_dir, out)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def reference(reference_run):
    return result(reference_run)


def finish(data_dir, out):
    p = pretrain(data_dir, out, "--resume")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


# (point, N): the N-th time the point is reached. Each checkpoint has 6 files (weights, config,
# optimizer, state, 2 tokenizer files); the run writes best/0, last/0, best/2, last/2, ... and
# one log line per iteration and evaluation.
POINTS = [("write", 1), ("write", 3), ("write", 7), ("write", 13), ("write", 20), ("write", 31),
          ("moved_aside", 1), ("moved_aside", 2), ("swapped", 1), ("swapped", 3), ("replace", 1),
          ("swapped", 7)]  # the last evaluation's best/ is in place, its last/ not yet written


@pytest.mark.parametrize("point,n", POINTS)
def test_kill_at_write_point_then_resume_is_exact(data_dir, reference, tmp_path, point, n):
    out = tmp_path / "out"
    p = pretrain(data_dir, out, crash=f"{point}:{n}")
    assert p.returncode == CRASH_EXIT, (p.returncode, p.stderr)
    finish(data_dir, out)
    assert result(out) == reference


@pytest.mark.parametrize("point", ["write:1", "replace:1"])
def test_kill_while_resume_rewrites_the_log_keeps_it(data_dir, reference, tmp_path, point):
    out = tmp_path / "out"
    p = pretrain(data_dir, out, crash="write:40")  # late in the run: the log has many lines
    assert p.returncode == CRASH_EXIT, p.stderr
    before = (out / "log.jsonl").read_bytes()
    assert before.count(b"\n") > 5
    p = pretrain(data_dir, out, "--resume", crash=point)  # the first write of a resume: the log
    assert p.returncode == CRASH_EXIT, p.stderr
    after = (out / "log.jsonl").read_bytes()
    assert after == before or before.startswith(after) and after.count(b"\n") > 5
    finish(data_dir, out)
    assert result(out) == reference


def test_start_into_a_folder_of_crash_leftovers_is_allowed(data_dir, reference, tmp_path):
    out = tmp_path / "out"
    p = pretrain(data_dir, out, crash="write:4")  # inside the first checkpoint (after the log): none complete
    assert p.returncode == CRASH_EXIT
    assert any(p.name.startswith(".best.tmp-") for p in out.iterdir())
    p = pretrain(data_dir, out)
    assert p.returncode == 0, p.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert result(out) == reference


# ----------------------------------------------------------------------------- fine-tuning
def finetune(base, data, out, method, *extra, crash=None):
    env = dict(os.environ)
    env.pop("MINILLM_CRASH_AT", None)
    if crash:
        env["MINILLM_CRASH_AT"] = crash
    args = [sys.executable, "-m", "minillm", "finetune", "--base", str(base), "--data", str(data),
            "--out", str(out), "--method", method, "--epochs", "3", "--rank", "2", "--batch-size", "4",
            "--lora-dropout", "0.1", "--lr", "3e-3", "--no-progress", *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def finetune_result(out, method):
    names = ("adapter.safetensors", "optimizer.safetensors") if method == "lora" else \
        ("model.safetensors", "optimizer.safetensors")
    files = {f"{sub}/{n}": (out / sub / n).read_bytes() for sub in ("best", "last") for n in names}
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return files, sorted((r["step"], k, r[k]) for r in recs for k in ("train_loss", "val_loss") if k in r)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "sft.jsonl"
    words = ["the king", "good night", "thy crown", "speak thou", "the queen", "love and death"]
    recs = [{"prompt": words[i % 6], "response": " " + words[(i * 5 + 1) % 6] + "."} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.mark.parametrize("method,crash", [
    ("lora", "swapped:2"),  # after epoch 1's last/ is in place, before its old copy is deleted
    pytest.param("lora", "write:9", marks=pytest.mark.slow),  # inside epoch 1's last/ write
    pytest.param("full", "moved_aside:3", marks=pytest.mark.slow),  # between last/'s two renames
])
def test_finetune_kill_then_resume_is_exact(reference_run, sft_data, tmp_path, method, crash):
    ref = tmp_path / "ref"
    p = finetune(reference_run, sft_data, ref, method)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out"
    p = finetune(reference_run, sft_data, out, method, crash=crash)
    assert p.returncode == CRASH_EXIT, (p.returncode, p.stderr)
    p = finetune(reference_run, sft_data, out, method, "--resume")
    assert p.returncode == 0, p.stderr
    assert [q.name for q in out.iterdir() if q.name.startswith(".")] == []
    assert finetune_result(out, method) == finetune_result(ref, method)


def test_finetune_resume_with_other_settings_is_refused(reference_run, sft_data, tmp_path):
    out = tmp_path / "out"
    assert finetune(reference_run, sft_data, out, "lora").returncode == 0
    p = finetune(reference_run, sft_data, out, "lora", "--resume", "--batch-size", "8")
    assert p.returncode == 2 and "batch_size" in p.stderr, p.stderr


# ----------------------------------------------------------------------------- prepare
def prepare_cli(corpus, out, crash=None):
    env = dict(os.environ)
    env.pop("MINILLM_CRASH_AT", None)
    if crash:
        env["MINILLM_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "minillm", "prepare", "--corpus", str(corpus), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)


def consistent(out):
    """The corpus hash of the data in ``out``, after checking that its files agree with meta.json."""
    from minillm.data import TokenData

    data = TokenData(out)
    assert len(data.train) == data.meta["train_tokens"] and len(data.val) == data.meta["val_tokens"]
    assert data.tokenizer().vocab_size == data.meta["vocab_size"]
    return data.meta["corpus"]["sha256"]


@pytest.mark.parametrize("crash", ["write:1", "write:3", "replace:2", "replace:4", "prepare_swap:1", "prepare_swap:2"])
def test_kill_while_prepare_replaces_data_keeps_old_or_new(tmp_path, crash):
    """Re-running prepare over good data and killing it anywhere leaves the old data or the new,
    never a mix and never none; the next prepare finishes and leaves nothing behind."""
    from minillm.data import corpus_sha256, read_corpus

    old_corpus = make_corpus(tmp_path / "old.txt", seed=1)
    new_corpus = make_corpus(tmp_path / "new.txt", n_lines=600, seed=2)
    new_corpus.write_text(new_corpus.read_text() + "ZEBRA\n")  # another vocabulary too
    out = tmp_path / "data"
    assert prepare_cli(old_corpus, out).returncode == 0
    p = prepare_cli(new_corpus, out, crash=crash)
    assert p.returncode == CRASH_EXIT, p.stderr
    hashes = {corpus_sha256(read_corpus(c)) for c in (old_corpus, new_corpus)}
    assert consistent(out) in hashes
    assert prepare_cli(new_corpus, out).returncode == 0
    assert consistent(out) == corpus_sha256(read_corpus(new_corpus))
    assert [q.name for q in out.iterdir() if q.name.startswith(".")] == []
