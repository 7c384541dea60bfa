"""Quantized products: kernels/cpu/qmatmul.py versions vs the reference (dequantize, then matmul),
and the fraction of the machine's memory bandwidth each reaches when decoding.

    python benchmarks/bench_qmatmul.py [--formats q4_1,q8_0] [--rows 1,512] [--tiny]

Shapes: SmolLM2-135M's matrices (C = 576, F = 1536, 9 heads and 3 key/value heads of 64):
q/o (576, 576), k/v (192, 576), gate/up (1536, 576), down (576, 1536), and the tied head
(49152, 576). Rows N = 1 is one decoded token: every weight is read once, so the time is bounded
by W's bytes over the memory bandwidth; the table shows GB/s = W's bytes / time, and that as a
fraction of the read bandwidth measured in the same run by a parallel Numba sum over 512 MiB
(``--stream-mib``). N = 512 is a prompt: compute-bound, shown as GFLOP/s (2 N O K).
Each version is checked against the reference before it is timed; ``--tiny`` runs small shapes
only (to check that the script works, not to measure).
"""

import argparse
import sys

import numpy as np
from _cpu_bench import assert_close, best_ms
from minillm.kernels import quant as Q
from minillm.kernels import reference as R
from minillm.kernels.cpu import qmatmul as K
from numba import njit, prange

SHAPES = {"q_proj/o_proj": (576, 576), "k_proj/v_proj": (192, 576),
          "gate/up_proj": (1536, 576), "down_proj": (576, 1536), "lm_head": (49152, 576)}
TINY = {"tiny": (33, 96)}


@njit(parallel=True, cache=True, fastmath=True)
def _read_all(a):
    # the sum of a (n,) float32 array, read once by every thread in turn: a STREAM-like read
    nt = 64
    part = np.zeros(nt)
    n = a.size
    for c in prange(nt):
        s = 0.0
        for i in range(c * n // nt, (c + 1) * n // nt):
            s += a[i]
        part[c] = s
    return part.sum()


def read_bandwidth_gbs(mib):
    a = np.ones(mib * (1 << 20) // 4, dtype=np.float32)
    return a.nbytes / best_ms(lambda: _read_all(a), min_calls=5) / 1e6


def rows(formats, n_rows, shapes, stream_gbs):
    out = []
    for name, (O, Kd) in shapes.items():
        w = np.random.default_rng(0).standard_normal((O, Kd)).astype(np.float32) / 8
        for fmt in formats:
            qw = Q.QuantWeight.from_float(w, fmt)
            for N in n_rows:
                x = np.random.default_rng(1).standard_normal((N, Kd)).astype(np.float32)
                want = R.qmatmul_forward(x, qw)
                ref_ms = best_ms(lambda x=x, qw=qw: R.qmatmul_forward(x, qw), min_calls=5)
                for v in sorted(K.FORWARD):
                    if v == 1 and O * Kd * N > 1 << 22:
                        continue  # the plain loop takes seconds here and teaches nothing more
                    assert_close(K.run("qmatmul_forward", v, x, qw), want,
                                 f"qmatmul v{v} {name} {fmt} N={N}", rtol=1e-4)
                    ms = best_ms(lambda v=v, x=x, qw=qw: K.run("qmatmul_forward", v, x, qw),
                                 min_calls=5)
                    gbs = qw.nbytes / ms / 1e6
                    out.append({"shape": name, "fmt": fmt, "N": N, "version": v,
                                "ref_ms": ref_ms, "ms": ms, "gbs": gbs, "frac": gbs / stream_gbs,
                                "gflops": 2 * N * O * Kd / ms / 1e6})
    return out


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--formats", default="q4_1,q8_0,q4_0")
    p.add_argument("--rows", default="1,512")
    p.add_argument("--stream-mib", type=int, default=512)
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args(argv)
    shapes = TINY if a.tiny else SHAPES
    stream = read_bandwidth_gbs(8 if a.tiny else a.stream_mib)
    table = rows(a.formats.split(","), [int(n) for n in a.rows.split(",")], shapes, stream)
    print(f"\nread bandwidth (parallel sum): {stream:.1f} GB/s")
    print(f"{'shape':14s} {'fmt':5s} {'N':>4s} {'ver':>3s} {'ref ms':>9s} {'ms':>9s} "
          f"{'GB/s W':>7s} {'of bw':>6s} {'GFLOP/s':>8s} {'x ref':>6s}")
    for r in table:
        print(f"{r['shape']:14s} {r['fmt']:5s} {r['N']:4d} {r['version']:3d} {r['ref_ms']:9.3f} "
              f"{r['ms']:9.3f} {r['gbs']:7.1f} {r['frac']:6.2f} {r['gflops']:8.1f} "
              f"{r['ref_ms'] / r['ms']:5.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
