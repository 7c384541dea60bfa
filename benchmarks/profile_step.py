"""Where a training step's time goes: every kernel call timed through the registry.

    python benchmarks/profile_step.py --config small --steps 6
    python benchmarks/profile_step.py --config tiny --steps 40 --attention 5

Wraps each callable the kernel registry hands out (kernels/registry.py) in a timer, runs
warm-up steps, then prints per step: the wall time, the time inside each op family (matmul,
attention, gelu, layernorm, adamw, cross_entropy, ...) and the rest (autograd, NumPy
elementwise ops, Python). Unlike cProfile it adds one perf_counter pair per kernel call, so the
sums stay close to the unprofiled step.
"""

import argparse
import collections
import os
import sys
import time

import minillm  # noqa: F401  (first: minillm/_env.py's settings apply only before NumPy loads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_train  # noqa: E402

from minillm.kernels import registry  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(bench_train.CONFIGS), default="small")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--attention", type=int, default=None,
                   help="attention version (kernels/cpu/attention/; default: the ladder's)")
    args = p.parse_args(argv)

    spent = collections.defaultdict(float)
    resolve = registry._resolve

    def timed(name, mode, device):
        fn = resolve(name, mode, device)
        family = name.split("_")[0] if not name.startswith("cross") else "cross_entropy"

        def call(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[family] += time.perf_counter() - t
        return call

    registry._resolve = timed
    if args.attention is not None:
        registry.set_version("attention_forward", args.attention)
        registry.set_version("attention_backward", args.attention)
    registry.clear_cache()
    version = args.attention or registry.ladder("attention_forward").default

    step = bench_train.minillm_step_fn(bench_train.CONFIGS[args.config])
    for _ in range(3):
        step()
    spent.clear()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = (time.perf_counter() - t) / args.steps * 1e3
    per = {k: v / args.steps * 1e3 for k, v in spent.items()}
    rest = wall - sum(per.values())
    print(f"{args.config}: attention v{version}, {args.steps} steps, ms per step")
    print(f"{'step':14s} {wall:8.1f}")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"{k:14s} {v:8.1f}")
    print(f"{'rest':14s} {rest:8.1f}")


if __name__ == "__main__":
    main()
