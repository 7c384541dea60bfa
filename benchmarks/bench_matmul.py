"""Matmul: the Numba ladder in kernels/cpu/matmul.py vs NumPy's BLAS (``a @ b``, OpenBLAS).

Script: ``python benchmarks/bench_matmul.py`` prints one row per (shape, version).
Suite: ``pytest benchmarks/bench_matmul.py --benchmark-enable``. Every version is checked
against ``a @ b`` before it is timed and warmed up first (JIT compile excluded); a time is the
fastest of many single calls. FLOPs: 2 M N K (one multiply and one add per (i, j, k)).
v1 is only timed at the smaller shape (it needs seconds at the larger one).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import best_ms as _best_ms
from minillm.kernels.cpu import matmul as K

# GPT shapes: small config's qkv projection (B*T = 2048 rows, C = 384 -> 3C), tiny config's
# MLP up-projection (B*T = 768 rows, C = 128 -> 4C)
SHAPES = [(2048, 384, 1152), (768, 128, 512)]


def make(M, Kd, N, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((M, Kd)).astype(dtype), rng.standard_normal((Kd, N)).astype(dtype)


def impl(version, a, b):
    """A validated, warmed-up call of one version (or of the BLAS for version 0)."""
    if version == 0:
        return lambda: a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    fn = K.VERSIONS[version]
    fn(out, a, b)
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-3)
    return lambda: fn(out, a, b)


def best_ms(fn):
    return _best_ms(fn, min_time=0.3, min_calls=5)


@pytest.mark.parametrize("version", [0] + sorted(K.VERSIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul(benchmark, shape, version):
    if version == 1 and shape[0] > 1000:
        pytest.skip("v1 takes seconds at this shape")
    fn = impl(version, *make(*shape))
    benchmark(fn)


def main():
    print(f"{'shape (M,K)x(K,N)':24s} {'version':8s} {'ms':>9s} {'GFLOP/s':>8s} {'vs BLAS':>8s}")
    for M, Kd, N in SHAPES:
        a, b = make(M, Kd, N)
        blas = best_ms(impl(0, a, b))
        gf = 2 * M * N * Kd / 1e6
        name = f"({M},{Kd})x({Kd},{N})"
        print(f"{name:24s} {'BLAS':8s} {blas:9.2f} {gf / blas:8.1f} {1.0:7.2f}x")
        for v in sorted(K.VERSIONS):
            if v == 1 and M > 1000:
                continue
            ms = best_ms(impl(v, a, b))
            print(f"{name:24s} {'v%d' % v:8s} {ms:9.2f} {gf / ms:8.1f} {blas / ms:7.2f}x")


if __name__ == "__main__":
    main()
