"""Every kind of bad input, table-driven, across the subcommands: each gives its exit status
(2 for a mistake, 3 for a diverged run), one line on stderr without a traceback, and leaves every
file that existed before byte-identical (only a log a resumed run appends to may grow)."""

import json
import resource
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import minillm as M
from minillm.checkpoints import run as ckpt
from minillm.cli import main
from minillm.data import TokenData, prepare
from minillm.models import GPT, GPTConfig
from tests.train.test_pretrain import TINY, make_corpus

RUN = [*TINY, "--max_iters=2", "--eval_interval=2", "--lr_decay_iters=2", "--no-progress"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A corpus, prepared data, a finished tiny run and fine-tuning data, made once."""
    w = tmp_path_factory.mktemp("world")
    corpus = make_corpus(w / "corpus.txt")
    import string

    with open(corpus, "a") as f:  # every printable character, for fine-tuning templates
        f.write(string.printable.replace("\x0b", "").replace("\x0c", "") + "\n")
    prepare(w / "data", corpus=corpus, progress=False)
    assert main(["pretrain", f"--data_dir={w / 'data'}", f"--out_dir={w / 'run'}", *RUN]) == 0
    lines = [json.dumps({"prompt": "the king", "response": " speak thou."})] * 20
    (w / "sft.jsonl").write_text("\n".join(lines) + "\n")
    (w / "empty.txt").write_text("  \n")
    (w / "latin1.txt").write_bytes("caf\xe9 society ".encode("latin-1") * 20)
    (w / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (w / "a_file").write_text("not a folder\n")
    return w


def copy_run(w, name, edit=None):
    """A copy of the finished run (to damage), at w/name."""
    dst = w / name
    shutil.copytree(w / "run", dst)
    if edit:
        edit(dst)
    return dst


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_model(**kw):
    def edit(d):
        for sub in ("best", "last"):
            edit_json(d / sub / "config.json", lambda c: c["model"].update(kw))
    return edit


def state_edit(change):
    def edit(d):
        shutil.rmtree(d / "best")
        edit_json(d / "last" / "state.json", change)
    return edit


def flip_a_bit(d):
    for sub in ("best", "last"):
        p = d / sub / "model.safetensors"
        b = bytearray(p.read_bytes())
        b[-5] ^= 0x10
        p.write_bytes(bytes(b))


def nan_checkpoint(w):
    M.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8))
    m.wte.weight.data[0, 0] = np.nan
    M.save(m, w / "nan_ckpt")
    return w / "nan_ckpt"


def escaping_tokenizer(d):
    for sub in ("best", "last"):
        (d / sub / "tokenizer.json").write_text(json.dumps(
            {"kind": "sentencepiece", "format": 1, "data": {"model_file": "../../corpus.txt"}}))


def lora_with_base(w, base):
    """A LoRA adapter directory whose adapter_config.json names ``base``."""
    d = w / f"lora_{abs(hash(base))}"
    d.mkdir(exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps(
        {"rank": 2, "alpha": 4, "targets": "attn", "base": base, "base_fingerprint": "0" * 64}))
    (d / "adapter.safetensors").write_bytes(b"")
    return d


def P(*a):
    return ["pretrain", *a]


# (id, setup(world) -> argv, expected exit status, a word the message must hold)
CASES = [
    # pretrain: config values (the constraints table)
    *[(f"pretrain {o}", lambda w, o=o: P(f"--data_dir={w / 'data'}", f"--out_dir={w / 'o'}", *RUN, o), 2, word)
      for o, word in [
          ("--learning_rate=nan", "learning_rate"), ("--learning_rate=inf", "learning_rate"),
          ("--learning_rate=-1", "learning_rate"), ("--learning_rate=0", "learning_rate"),
          ("--warmup_iters=-5", "warmup_iters"), ("--grad_clip=-1", "grad_clip"),
          ("--beta1=2", "beta1"), ("--beta2=1", "beta2"), ("--beta1=nan", "beta1"),
          ("--weight_decay=-5", "weight_decay"), ("--seed=-1", "seed"), ("--seed=1e20", "seed"),
          ("--block_size=0", "block_size"), ("--batch_size=0", "batch_size"),
          ("--dropout=1", "dropout"), ("--dropout=-0.1", "dropout"), ("--min_lr=-1", "min_lr"),
          ("--min_lr=nan", "min_lr"), ("--n_layer=0", "n_layer"), ("--n_head=3", "divisible"),
          ("--eval_interval=0", "eval_interval"), ("--eval_iters=0", "eval_iters"),
          ("--log_interval=0", "log_interval"), ("--max_iters=-1", "max_iters"),
          ("--gradient_accumulation_steps=0", "gradient_accumulation_steps"),
          ("--initializer_range=0", "initializer_range"), ("--vocab_size=0", "vocab_size"),
          ("--lr_decay_iters=-3", "lr_decay_iters"), ("--sample_tokens=-1", "sample_tokens"),
          ("--sample_temperature=nan", "sample_temperature"), ("--sample_top_k=-2", "sample_top_k"),
          ("--device=tpu", "device"), ("--dtype=int8", "dtype"), ("--kernels=fast", "kernels"),
          ("--tokenizer=bytes", "tokenizer"), ("--tokenizer_model=wordpiece", "tokenizer_model"),
          ("--max_iters=lots", "max_iters"), ("--bias=maybe", "bias"), ("--max_itres=5", "max_iters"),
          ("--out_dir=", "out_dir"), ("--learning_rate", "no value"),
      ]],
    ("pretrain --config missing", lambda w: P("--config", str(w / "nope.toml")), 2, "config"),
    # pretrain: paths
    ("pretrain out_dir is a file", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={w / 'a_file'}", *RUN), 2, "a_file"),
    ("pretrain out_dir under a file", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={w / 'a_file' / 'x'}", *RUN), 2, "a_file"),
    ("pretrain out_dir in /proc", lambda w: P(f"--data_dir={w / 'data'}", "--out_dir=/proc/minillm_out", *RUN), 2, "/proc"),
    ("pretrain data_dir is a file", lambda w: P(f"--data_dir={w / 'a_file'}", f"--out_dir={w / 'o'}", *RUN,
                                                f"--corpus={w / 'corpus.txt'}"), 2, "a_file"),
    ("pretrain corpus missing", lambda w: P(f"--data_dir={w / 'd2'}", f"--out_dir={w / 'o'}", *RUN,
                                            f"--corpus={w / 'missing.txt'}"), 2, "missing"),
    ("pretrain corpus /dev/zero", lambda w: P(f"--data_dir={w / 'd2'}", f"--out_dir={w / 'o'}", *RUN,
                                              "--corpus=/dev/zero"), 2, "regular file"),
    ("pretrain block_size too large", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={w / 'o'}", *RUN,
                                                  "--block_size=100000"), 2, "block_size"),
    # pretrain: a run folder
    ("pretrain into a run", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={w / 'run'}", *RUN), 2, "resume"),
    ("resume other shape", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={w / 'run'}", *RUN, "--resume",
                                       "--n_embd=32"), 2, "shape"),
    ("resume state without batch_seed", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={copy_run(w, 'r1', state_edit(lambda s: s.pop('batch_seed')))}",
                                                   *RUN, "--resume", "--max_iters=4"), 2, "training state"),
    ("resume step not a number", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={copy_run(w, 'r2', state_edit(lambda s: s.update(step='abc')))}",
                                             *RUN, "--resume", "--max_iters=4"), 2, "damaged"),
    ("resume step negative", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={copy_run(w, 'r3', state_edit(lambda s: s.update(step=-4)))}",
                                         *RUN, "--resume", "--max_iters=4"), 2, "damaged"),
    ("resume batch seed wrong type", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={copy_run(w, 'r4', state_edit(lambda s: s.update(batch_seed='five')))}",
                                                *RUN, "--resume", "--max_iters=4"), 2, "damaged"),
    ("diverges at lr 1e30", lambda w: P(f"--data_dir={w / 'data'}", f"--out_dir={copy_run(w, 'r5')}", *RUN, "--resume",
                                        "--max_iters=40", "--eval_interval=1000", "--lr_decay_iters=40",
                                        "--warmup_iters=0", "--learning_rate=1e30"), 3, "diverged"),
    # prepare
    ("prepare corpus missing", lambda w: ["prepare", "--corpus", str(w / "missing.txt"), "--out", str(w / "p")], 2, "does not exist"),
    ("prepare corpus empty", lambda w: ["prepare", "--corpus", str(w / "empty.txt"), "--out", str(w / "p")], 2, "empty"),
    ("prepare corpus latin-1", lambda w: ["prepare", "--corpus", str(w / "latin1.txt"), "--out", str(w / "p")], 2, "UTF-8"),
    ("prepare corpus binary", lambda w: ["prepare", "--corpus", str(w / "binary.bin"), "--out", str(w / "p")], 2, "UTF-8"),
    ("prepare corpus /dev/zero", lambda w: ["prepare", "--corpus", "/dev/zero", "--out", str(w / "p")], 2, "regular file"),
    ("prepare corpus empty folder", lambda w: (w / "emptydir").mkdir(exist_ok=True) or
     ["prepare", "--corpus", str(w / "emptydir"), "--out", str(w / "p")], 2, "no .txt"),
    ("prepare vocab 0", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "p"),
                                   "--tokenizer", "sentencepiece", "--vocab-size", "0"], 2, "vocab_size"),
    ("prepare vocab -5", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "p"),
                                    "--tokenizer", "sentencepiece", "--vocab-size", "-5"], 2, "vocab_size"),
    ("prepare vocab too large", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "p"),
                                           "--tokenizer", "sentencepiece", "--vocab-size", "60000"], 2, "vocab"),
    ("prepare val 0", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "p"), "--val-fraction", "0"], 2, "val_fraction"),
    ("prepare val 1.5", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "p"), "--val-fraction", "1.5"], 2, "val_fraction"),
    ("prepare val nan", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "p"), "--val-fraction", "nan"], 2, "val_fraction"),
    ("prepare out is a file", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", str(w / "a_file")], 2, "a_file"),
    ("prepare out in /proc", lambda w: ["prepare", "--corpus", str(w / "corpus.txt"), "--out", "/proc/minillm_data"], 2, "/proc"),
    # finetune
    *[(f"finetune {' '.join(o)}", lambda w, o=o: ["finetune", "--base", str(w / "run"), "--data", str(w / "sft.jsonl"),
                                                   "--out", str(w / "ft"), "--no-progress", *o], 2, word)
      for o, word in [
          (["--lr", "nan"], "lr"), (["--lr", "-1"], "lr"), (["--lr", "inf"], "lr"), (["--alpha", "nan"], "alpha"),
          (["--alpha", "0"], "alpha"), (["--block-size", "0"], "block_size"), (["--block-size", "9999"], "block_size"),
          (["--rank", "0"], "rank"), (["--epochs", "0"], "epochs"), (["--batch-size", "0"], "batch_size"),
          (["--lora-dropout", "1"], "lora_dropout"), (["--seed", "-1"], "seed"), (["--val-fraction", "2"], "val_fraction"),
          (["--weight-decay", "-1"], "weight_decay"), (["--freeze-last-k", "1"], "freeze_last_k"),
          (["--method", "full", "--freeze-last-k", "-1"], "freeze_last_k"), (["--targets", "nothing"], "target"),
      ]],
    ("finetune base missing", lambda w: ["finetune", "--base", str(w / "nobase"), "--data", str(w / "sft.jsonl"),
                                         "--out", str(w / "ft")], 2, "nobase"),
    ("finetune data missing", lambda w: ["finetune", "--base", str(w / "run"), "--data", str(w / "none.jsonl"),
                                         "--out", str(w / "ft")], 2, "none.jsonl"),
    ("finetune data binary", lambda w: ["finetune", "--base", str(w / "run"), "--data", str(w / "binary.bin"),
                                        "--out", str(w / "ft")], 2, "binary.bin"),
    ("finetune data not JSON", lambda w: ["finetune", "--base", str(w / "run"), "--data", str(w / "corpus.txt"),
                                          "--out", str(w / "ft")], 2, "JSON"),
    ("finetune into a non-empty out", lambda w: ["finetune", "--base", str(w / "run"), "--data", str(w / "sft.jsonl"),
                                                 "--out", str(w / "run")], 2, "overwrite"),
    ("finetune resume without state", lambda w: ["finetune", "--base", str(w / "run"), "--data", str(w / "sft.jsonl"),
                                                 "--out", str(copy_run(w, "ft_old", lambda d: [(d / s / "state.json").unlink()
                                                                                             for s in ("best", "last")])),
                                                 "--resume", "--no-progress"], 2, "training state"),
    ("finetune out is a file", lambda w: ["finetune", "--base", str(w / "run"), "--data", str(w / "sft.jsonl"),
                                          "--out", str(w / "a_file" / "ft"), "--no-progress"], 2, "a_file"),
    # finetune-demo-data
    ("demo n-sft -1", lambda w: ["finetune-demo-data", "--corpus", str(w / "corpus.txt"), "--out", str(w / "dd"), "--n-sft", "-1"], 2, "n_sft"),
    ("demo n-sft 0", lambda w: ["finetune-demo-data", "--corpus", str(w / "corpus.txt"), "--out", str(w / "dd"), "--n-sft", "0"], 2, "n_sft"),
    ("demo seed -1", lambda w: ["finetune-demo-data", "--corpus", str(w / "corpus.txt"), "--out", str(w / "dd"), "--seed", "-1"], 2, "seed"),
    ("demo out is a file", lambda w: ["finetune-demo-data", "--corpus", str(w / "corpus.txt"), "--out", str(w / "a_file")], 2, "a_file"),
    ("demo corpus missing", lambda w: ["finetune-demo-data", "--corpus", str(w / "nope.txt"), "--out", str(w / "dd")], 2, "nope.txt"),
    # sample / chat / classify / export: untrusted checkpoints
    ("sample ckpt missing", lambda w: ["sample", "--ckpt", str(w / "nothing_here")], 2, "nothing_here"),
    ("sample q8_0 activations of a float model", lambda w: ["sample", "--ckpt", str(w / "run"), "--activations", "q8_0"], 2, "holds none"),
    ("sample n_embd text", lambda w: ["sample", "--ckpt", str(copy_run(w, "c1", set_model(n_embd="abc")))], 2, "n_embd"),
    ("sample model null", lambda w: ["sample", "--ckpt", str(copy_run(w, "c2", lambda d: [edit_json(
        d / s / "config.json", lambda c: c.update(model=None)) for s in ("best", "last")]))], 2, "model"),
    ("sample n_embd 1e9", lambda w: ["sample", "--ckpt", str(copy_run(w, "c3", set_model(n_embd=10**9, n_head=1)))], 2, "n_embd"),
    ("sample vocab 2^40", lambda w: ["sample", "--ckpt", str(copy_run(w, "c4", set_model(vocab_size=2**40)))], 2, "vocab_size"),
    ("sample 8192 x 64 layers", lambda w: ["sample", "--ckpt", str(copy_run(w, "c5", set_model(n_embd=8192, n_layer=64, n_head=2)))], 2, "parameters"),
    ("sample bias not bool", lambda w: ["sample", "--ckpt", str(copy_run(w, "c6", set_model(bias="yes")))], 2, "bias"),
    ("sample dropout nan", lambda w: ["sample", "--ckpt", str(copy_run(w, "c7", set_model(dropout=float("nan"))))], 2, "dropout"),
    ("sample unknown setting", lambda w: ["sample", "--ckpt", str(copy_run(w, "c8", set_model(n_expert=8)))], 2, "n_expert"),
    ("sample bit flip", lambda w: ["sample", "--ckpt", str(copy_run(w, "c9", flip_a_bit))], 2, "sha256"),
    ("sample config not JSON", lambda w: ["sample", "--ckpt", str(copy_run(w, "c10", lambda d: [
        (d / s / "config.json").write_text("{nope") for s in ("best", "last")]))], 2, "corrupt"),
    ("sample truncated weights", lambda w: ["sample", "--ckpt", str(copy_run(w, "c11", lambda d: [
        (d / s / "model.safetensors").write_bytes((d / s / "model.safetensors").read_bytes()[:300])
        for s in ("best", "last")])), "--no-verify"], 2, "model.safetensors"),
    ("sample non-finite weights", lambda w: ["sample", "--ckpt", str(nan_checkpoint(w))], 2, "non-finite"),
    ("sample tokenizer escapes", lambda w: ["sample", "--ckpt", str(copy_run(w, "c12", escaping_tokenizer))], 2, "model_file"),
    ("sample num-samples 0", lambda w: ["sample", "--ckpt", str(w / "run"), "--num-samples", "0"], 2, "num-samples"),
    ("sample prompt file missing", lambda w: ["sample", "--ckpt", str(w / "run"), "--prompt", f"FILE:{w / 'none.txt'}"], 2, "none.txt"),
    ("adapter base with ..", lambda w: ["sample", "--ckpt", str(lora_with_base(w, "../../run/best"))], 2, ".."),
    ("adapter base is a file", lambda w: ["sample", "--ckpt", str(lora_with_base(w, str(w / "corpus.txt")))], 2, "not a checkpoint"),
    ("chat ckpt missing", lambda w: ["chat", "--ckpt", str(w / "nothing_here")], 2, "nothing_here"),
    ("classify ckpt missing", lambda w: ["classify", "--ckpt", str(w / "nothing_here"), "--text", "hi"], 2, "nothing_here"),
    ("export ckpt missing", lambda w: ["export", "--ckpt", str(w / "nothing_here"), "--out", str(w / "ex")], 2, "nothing_here"),
    # plot
    ("plot no log", lambda w: ["plot", str(w / "data")], 2, "log"),
    ("plot corrupt log", lambda w: (w / "badlog").mkdir(exist_ok=True) or (w / "badlog" / "log.jsonl").write_text("{{{\n[1]\n")
     and ["plot", str(w / "badlog")], 2, "training log"),
    ("plot out in /proc", lambda w: ["plot", str(w / "run"), "--out", "/proc/minillm_loss.png"], 2, "/proc"),
]


def snapshot(root):
    return {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


@pytest.mark.parametrize("name,setup,status,word", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, capsys, name, setup, status, word):
    argv = setup(world)
    before = snapshot(world)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == status, (argv, err)
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert word.lower() in err.lower(), (word, err)
    after = snapshot(world)
    for path, data in before.items():
        if path.name == "log.jsonl" and status == 3:  # the resumed run logged its steps
            assert after[path].startswith(data[:data.rfind(b"\n") + 1]) or path in after
            continue
        assert after.get(path) == data, f"{path} changed or vanished"


def test_prepare_on_a_full_disk_keeps_the_old_data(world, capsys):
    """A write that fails half-way (EFBIG, as a full disk's ENOSPC) leaves the old data usable."""
    out = world / "full"
    prepare(out, corpus=world / "corpus.txt", progress=False)
    before = snapshot(out)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        code = main(["prepare", "--corpus", str(world / "corpus.txt"), "--out", str(out), "--val-fraction", "0.2"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(out) in err
    assert snapshot(out) == before
    assert TokenData(out).vocab_size > 0


def test_diverged_run_keeps_its_checkpoints_loadable(world):
    d = copy_run(world, "div")
    before = snapshot(d / "last")
    code = main(P(f"--data_dir={world / 'data'}", f"--out_dir={d}", *RUN, "--resume", "--max_iters=40",
                  "--eval_interval=1", "--lr_decay_iters=40", "--warmup_iters=0", "--learning_rate=1e30"))
    assert code == 3
    weights = ckpt.load_weights(ckpt.resume_point(d))
    assert all(np.isfinite(np.asarray(a)).all() for a in weights.values())
    assert snapshot(d / "last") == before or ckpt.has_training_state(d / "last")
