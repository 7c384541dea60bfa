"""Data-parallel training throughput: 1 process x 2 threads vs 2 MPI ranks x 1 thread.

Both train the same global batch per step (batch_size x gradient_accumulation_steps = B x 2,
micro-batches drawn as pretraining draws them): one process computes both micro-batches with 2
Numba threads per kernel; two ranks compute one each with 1 thread and sum their gradients with
one MPI Allreduce over a flat float32 buffer of all parameters. Printed per setting: tokens/s,
ms per step, and for the ranks the ms per step spent in the gradient Allreduce (which includes
waiting for the slower rank), beside an Allreduce of the same buffer alone after a barrier
(the transfer itself: a ring all-reduce moves 2 x (N-1)/N x params x 4 bytes per rank).

Validates before it times: the first step's loss of the two settings must agree (float32
rounding: different thread counts sum in different orders), and after the timed steps the
weights of the two ranks must be identical.

    python benchmarks/bench_distributed.py                      # small config, 10 steps
    python benchmarks/bench_distributed.py --config tiny --steps 2 --warmup 1   # does it run?

Needs mpi4py and an mpiexec (pip install 'minillm[mpi]'); the two settings run one after the
other as child processes, alternating for ``--rounds`` rounds so that machine noise hits both.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {  # as bench_train.py: the two Shakespeare configurations (vocab 65)
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8, vocab_size=65),
}
ACCUM = 2  # micro-batches per step: 2 in one process, 1 on each of 2 ranks


def find_mpiexec():
    for d in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        if (d / "mpiexec").is_file():
            return str(d / "mpiexec")
    return shutil.which("mpiexec")


# ----------------------------------------------------------------------------- one setting
def worker(c, steps, warmup):
    """Train ``warmup + steps`` steps in this process (a rank under mpiexec); rank 0 prints one
    JSON line: first loss, seconds per step, seconds per step in Allreduce, Allreduce alone."""
    import numpy as np

    import minillm as M
    from minillm import distributed
    from minillm.models import GPT, GPTConfig
    from minillm.optim import AdamW, gpt_param_groups
    from minillm.train.step import micro_batch_seeds, train_step

    world = distributed.get_world()
    M.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=c["vocab_size"], block_size=c["block_size"],
                          n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"],
                          dropout=0.0, bias=False))
    opt = AdamW(gpt_param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.99))
    B, T, V = c["batch_size"], c["block_size"], c["vocab_size"]

    def micro_batches(step):
        for j in world.my_micro_batches(ACCUM):
            rng = np.random.default_rng(micro_batch_seeds(0, step, j)[0])
            tokens = rng.integers(0, V, (B, T + 1))  # (B, T+1) random tokens, as pretraining draws
            yield tokens[:, :-1], tokens[:, 1:]

    in_allreduce = [0.0]
    real = world.allreduce_

    def timed(buf):
        t = time.perf_counter()
        out = real(buf)
        in_allreduce[0] += time.perf_counter() - t
        return out

    world.allreduce_ = timed
    first = None
    for s in range(warmup + steps):
        if s == warmup:
            world.barrier()
            in_allreduce[0], t0 = 0.0, time.perf_counter()
        loss, _ = train_step(model, opt, micro_batches(s), 1.0, n_micro=ACCUM, world=world)
        first = loss if first is None else first
    world.barrier()
    per_step = (time.perf_counter() - t0) / steps
    alone = 0.0
    if world.size > 1:  # the same buffer, summed with both ranks already waiting
        flat = np.zeros(sum(p.data.size for p in model.parameters()), np.float32)
        for _ in range(3):
            world.barrier()
            t = time.perf_counter()
            real(flat)
            alone += (time.perf_counter() - t) / 3
    weights = np.concatenate([p.data.reshape(-1) for p in model.parameters()])
    same = len(set(world.allgather(distributed.fingerprint(weights.tobytes().hex())))) == 1
    if world.is_main:
        print(json.dumps({"first_loss": first, "s_per_step": per_step, "same_weights": same,
                          "s_allreduce": in_allreduce[0] / steps, "s_allreduce_alone": alone,
                          "params": int(weights.size)}), flush=True)


# ----------------------------------------------------------------------------- the comparison
def run_setting(args, ranks, threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", "--config", args.config, "--steps",
           str(args.steps), "--warmup", str(args.warmup)]
    if ranks > 1:
        cmd = [find_mpiexec(), "-n", str(ranks), *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (JIT, caches)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best is shown")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    c = CONFIGS[args.config]
    if args.worker:
        return worker(c, args.steps, args.warmup)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        sys.exit("needs mpi4py: pip install 'minillm[mpi]'")
    if find_mpiexec() is None:
        sys.exit("needs an mpiexec beside python or on PATH: pip install 'minillm[mpi]'")

    settings = {"1 process x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}
    best = {}
    for r in range(args.rounds):
        for name, (ranks, threads) in settings.items():
            res = run_setting(args, ranks, threads)
            if name not in best or res["s_per_step"] < best[name]["s_per_step"]:
                best[name] = res
    one, two = best["1 process x 2 threads"], best["2 ranks x 1 thread"]
    if abs(one["first_loss"] - two["first_loss"]) > 1e-4 * abs(one["first_loss"]):
        sys.exit(f"the two settings disagree on the first step's loss: {one['first_loss']} vs "
                 f"{two['first_loss']}; not timing a wrong run")
    if not two["same_weights"]:
        sys.exit("the two ranks ended with different weights; not timing a wrong run")

    tokens = c["batch_size"] * c["block_size"] * ACCUM  # per step, both settings
    mb = one["params"] * 4 / 2**20
    print(f"config {args.config}: {one['params'] / 1e6:.2f}M parameters ({mb:.1f} MiB of float32 "
          f"gradients), {tokens} tokens per step, best of {args.rounds} rounds of {args.steps} "
          f"steps")
    print("| setting | tokens/s | ms/step | ms/step in Allreduce | Allreduce alone (ms) |")
    print("|---|---|---|---|---|")
    for name, res in best.items():
        ar = f"{res['s_allreduce'] * 1e3:.1f}" if name.startswith("2") else "-"
        alone = f"{res['s_allreduce_alone'] * 1e3:.1f}" if name.startswith("2") else "-"
        print(f"| {name} | {tokens / res['s_per_step']:.0f} | {res['s_per_step'] * 1e3:.0f} | "
              f"{ar} | {alone} |")
    print(f"speed-up of 2 ranks over 1 process: {one['s_per_step'] / two['s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
