"""Crash campaign: kill ``minillm pretrain`` at random moments and at every named write point,
resume, and count what went wrong.

    python benchmarks/crash_campaign.py --runs 24 --kills-per-run 2 --seed 0 --work /tmp/campaign

Each run: a tiny pretraining run (char data, 1 layer, dropout on) killed ``--kills-per-run``
times, each time either with SIGKILL after a random delay within the time an uninterrupted run takes or at a named write point
(``MINILLM_CRASH_AT``, see minillm.checkpoints.atomic), and each time continued with
``--resume``, until it finishes. The finished run is compared with one uninterrupted run.
Counted per run:

    dead end       a --resume that exits non-zero (a run neither command can continue)
    inexact        final best/ and last/ weight and optimizer bytes, or logged losses, differ
    unloadable     a checkpoint in the folder that minillm.load refuses after any kill
    leftovers      temporary or moved-aside files left once the run has finished

Prints one line per run and a summary; exits 1 if any count is non-zero. This is a check,
not a timing: run it small on a busy machine.
"""

import argparse
import json
import os
import random
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import minillm as M
from minillm.checkpoints.atomic import CRASH_EXIT, CRASH_POINTS
from minillm.data import prepare

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4",
        "--eval_iters=2", "--log_interval=1", "--warmup_iters=2", "--sample_tokens=0",
        "--plot=false", "--kernels=reference", "--dropout=0.1", "--no-progress"]


def make_corpus(path, seed=0):
    rng = random.Random(seed)
    words = "the king queen lord speak thou art thy good night day love death sword crown".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + "." for _ in range(800)]
    path.write_text("\n".join(lines) + "\n" + string.ascii_letters + "\n", encoding="utf-8")
    return path


def pretrain_args(data, out, iters, *extra):
    return [sys.executable, "-m", "minillm", "pretrain", f"--data_dir={data}", f"--out_dir={out}",
            f"--max_iters={iters}", "--eval_interval=4", f"--lr_decay_iters={iters}", *TINY, *extra]


def env_with(crash=None):
    env = dict(os.environ)
    env.pop("MINILLM_CRASH_AT", None)
    if crash:
        env["MINILLM_CRASH_AT"] = crash
    return env


def result(out):
    files = {f"{s}/{n}": (out / s / n).read_bytes() for s in ("best", "last")
             for n in ("model.safetensors", "optimizer.safetensors")}
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return files, sorted((r["step"], k, r[k]) for r in recs for k in ("loss", "val_loss") if k in r)


def loadable(out):
    """False if a checkpoint directory in ``out`` exists but minillm.load refuses it."""
    for sub in ("best", "last"):
        if (out / sub / "model.safetensors").is_file():
            try:
                M.load(out / sub)
            except M.MinillmError:
                return False
    return True


def one_run(i, data, work, iters, kills, rng, reference, seconds, named=0.5):
    out = work / f"run{i}"
    counts = {"dead_end": 0, "inexact": 0, "unloadable": 0, "leftovers": 0, "kills": 0}
    resume = []
    for k in range(kills):
        if rng.random() < named:  # a named write point, N-th time it is reached
            point = rng.choice(CRASH_POINTS)
            crash = f"{point}:{rng.randint(1, 12 if point == 'write' else 4)}"
            p = subprocess.run(pretrain_args(data, out, iters, *resume), env=env_with(crash),
                               capture_output=True, text=True)
            how = crash if p.returncode == CRASH_EXIT else f"{crash} (not reached)"
        else:  # SIGKILL at a random moment
            p = subprocess.Popen(pretrain_args(data, out, iters, *resume), env=env_with(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.1, 1.0) * seconds)  # a moment within a whole run's time
            p.send_signal(signal.SIGKILL)
            p.wait()
            how = "sigkill"
        print(f"run {i}: kill {k + 1}: {how}", flush=True)
        if p.returncode not in (0, CRASH_EXIT, -signal.SIGKILL):
            counts["dead_end"] += 1
            print(f"run {i}: {how}: exit {p.returncode}: {(p.stderr or '').strip()[-300:]}")
        counts["kills"] += p.returncode in (CRASH_EXIT, -signal.SIGKILL)  # not: it had finished
        if not loadable(out):
            counts["unloadable"] += 1
        resume = ["--resume"]
    p = subprocess.run(pretrain_args(data, out, iters, "--resume"), env=env_with(),
                       capture_output=True, text=True)
    if p.returncode != 0:
        counts["dead_end"] += 1
        print(f"run {i}: final --resume: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        return counts
    counts["leftovers"] = sum(1 for q in out.iterdir() if q.name.startswith("."))
    counts["inexact"] = int(result(out) != reference)
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=24)
    ap.add_argument("--kills-per-run", type=int, default=2)
    ap.add_argument("--iters", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--named", type=float, default=0.5,
                    help="share of kills at a named write point (the rest: SIGKILL at a random moment)")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="crash_campaign_"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "meta.json").exists():
        prepare(data, corpus=make_corpus(work / "corpus.txt"), progress=False)
    ref = work / "reference"
    t0 = time.time()
    subprocess.run(pretrain_args(data, ref, args.iters, *(["--resume"] if (ref / "last").exists() else [])),
                   check=True, capture_output=True)
    seconds = time.time() - t0  # the random kills fall within this (a resume of a finished run: startup)
    reference = result(ref)
    rng = random.Random(args.seed)
    total = {}
    for i in range(args.runs):
        c = one_run(i, data, work, args.iters, args.kills_per_run, rng, reference, seconds, args.named)
        print(f"run {i}: " + ", ".join(f"{k} {v}" for k, v in c.items()), flush=True)
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    print("total: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    bad = sum(v for k, v in total.items() if k != "kills")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
