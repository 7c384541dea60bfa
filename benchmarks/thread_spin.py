"""CPU time burnt by idle threads right after a matmul: OpenBLAS's own threads vs minillm's pool.

After each product the main thread sleeps for ``--sleep`` seconds; the CPU time the process uses
meanwhile is spent by worker threads spinning while they wait for the next call. A multi-threaded
OpenBLAS call (``np.matmul``) leaves its workers spinning for about 2^28 cycles (0.1 s) without
yielding the core; minillm's matmul (kernels/cpu/matmul/pool.py: OpenBLAS single-threaded
inside each call, rows split over Numba's OpenMP pool) leaves only the OpenMP threads, which
spin briefly and then sleep.

Each kind runs in a fresh process (the thread pools start with the first call); the kinds are
interleaved over ``--rounds`` rounds, and each process reports the least of ``--repeat`` tries,
because a shared machine's other jobs add CPU time of their own only by chance.

tests/test_env.py checks the same property without a clock: OpenBLAS's workers are never put on
a CPU during minillm's matmul. Usage: ``python benchmarks/thread_spin.py [--n 600] [--rounds 3]``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

KINDS = ("numpy", "minillm")


def child(kind, n, sleep, repeat):
    import numpy as np

    import minillm as M

    a = np.ones((n, n), np.float32)
    if kind == "numpy":
        mm = np.matmul
    else:
        def mm(x, y):
            return (M.Tensor(x) @ M.Tensor(y)).data
    mm(a, a)  # start the pools (and compile minillm's kernels) before measuring
    time.sleep(sleep)
    spun = []
    for _ in range(repeat):
        mm(a, a)
        t = os.times()
        time.sleep(sleep)
        u = os.times()
        spun.append(u.user + u.system - t.user - t.system)
    print(max(0.0, min(spun)))  # (a difference of equal clocks can print as -0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="square matrix size (n x n x n product)")
    ap.add_argument("--sleep", type=float, default=0.3, help="seconds idle after each product")
    ap.add_argument("--repeat", type=int, default=3, help="tries per process (the least is kept)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per kind, interleaved")
    ap.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, args.sleep, args.repeat)
        return
    results = {k: [] for k in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--n", str(args.n),
                                  "--sleep", str(args.sleep), "--repeat", str(args.repeat)],
                                 capture_output=True, text=True, check=True)
            results[kind].append(float(out.stdout))
    print(f"CPU seconds spent while idle for {args.sleep} s after a {args.n}^3 float32 matmul "
          f"({os.cpu_count()} cores; median and range of {args.rounds} processes)")
    for kind, xs in results.items():
        print(f"  {kind:8s} {statistics.median(xs):.4f}   ({min(xs):.4f} .. {max(xs):.4f})")


if __name__ == "__main__":
    main()
