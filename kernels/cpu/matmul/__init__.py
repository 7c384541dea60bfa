"""Matrix multiply on the CPU: the optimisation ladder from naive loops to the BLAS's method.

out = a @ b with a: (M, K), b: (K, N), out: (M, N); 2 M N K FLOPs. The reference
(kernels/reference.py ``matmul``) is ``a @ b``: NumPy's OpenBLAS with its own threads.

Versions, by file (GFLOP/s, float32, 2 threads, fastest call; FP32 peak of the 2-core AVX2 Zen 3
machine about 2 x 94; conditions in benchmarks/README.md, "Matmul"):

  shape (M,K)x(K,N)         v1     v2     v3     v4     v5     OpenBLAS
  (2048,384)x(384,1152)     -     22.1   23.3   49.4   78.3   174.2
  (768,128)x(128,512)       0.9   26.5   35.3   48.8   76.2   172.8

  loops.py
  v1  naive (i, j, k): the inner loop walks down a column of b, N floats apart, so every FMA
      misses cache and nothing vectorises.
  v2  loop order (i, k, j): the inner loop is out[i, :] += a[i, k] * b[k, :], contiguous rows,
      so LLVM emits vector FMAs.
  v3  cache blocking: (MB, KB) x (KB, NB) tiles so a block of b stays in L2 while MB rows of a
      stream over it, and the k loop unrolled by four so each out row is loaded and stored once
      per four FMAs (the v2 loop is bound by L1 load/store traffic, not by FMAs).
  v4  v3 in parallel: prange over blocks of MB output rows (each thread owns its rows).
  packed.py
  v5  the BLAS's own method: a and b packed into contiguous slivers, and a register-blocked
      micro-kernel (kernels/cpu/_microkernel.py, LLVM IR through a Numba intrinsic) that keeps
      an MR x NR block of out in vector registers for a whole pass over k. The micro-kernel
      alone runs at about 94 GFLOP/s on one core (OpenBLAS's speed per core); the whole v5 at
      about half the BLAS: what it loses is outside the micro-kernel (the copy of each register
      tile into out, packing, the second pass over out when K spans two panels).
  pool.py
  v6  OpenBLAS's single-threaded GEMM called from Numba's thread pool, one block of rows per
      thread: the BLAS's speed without a second thread pool spinning on the cores Numba's
      kernels need next. Batched products one per task.  (default)

The table of rungs and defaults is ``LADDERS`` below. Tests: tests/kernels/test_ladders.py
(every rung vs the reference) and tests/kernels/test_cpu_matmul.py (strides, K = 0, batches,
the v6 thresholds). Benchmark: ``python benchmarks/bench_kernels.py --op matmul``.
"""

import numpy as np

from ...ladder import Ladder, Rung
from . import pool
from .loops import matmul_v1, matmul_v2, matmul_v3, matmul_v4
from .packed import matmul_v5


def _two_d(a, b):
    """2-D float32/float64 operands of one dtype with matching inner dimensions"""
    if getattr(a, "ndim", 0) != 2 or getattr(b, "ndim", 0) != 2:
        return "batched or vector operands"
    if a.dtype != b.dtype or a.dtype.name not in ("float32", "float64"):
        return f"{a.dtype} @ {b.dtype}"
    if a.shape[1] != b.shape[0]:
        return f"(M, K) @ (K, N) shapes needed, got {a.shape} @ {b.shape}"
    return None


def _loops(kernel, strided=False):
    """matmul(a, b) -> out for 2-D operands, running ``kernel(out, a, b)``; ``strided``
    versions read any strides (v5 packs its operands), the others want contiguous arrays."""
    def run(a, b):
        if _two_d(a, b) is not None:
            raise ValueError(f"matmul v1-v5 take {_two_d.__doc__}: {_two_d(a, b)}")
        if not strided:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        kernel(out, a, b)
        return out
    return run


LADDERS = (
    Ladder("matmul", "cpu", default=6, about="a @ b: loop order, blocking, packing, the BLAS",
           rungs=(
        Rung(1, _loops(matmul_v1), "naive (i, j, k): a column of b per output", _two_d),
        Rung(2, _loops(matmul_v2), "loop order (i, k, j): contiguous rows vectorise", _two_d),
        Rung(3, _loops(matmul_v3), "cache blocks, k unrolled by four", _two_d),
        Rung(4, _loops(matmul_v4), "v3 with prange over row blocks", _two_d),
        Rung(5, _loops(matmul_v5, strided=True), "packing + register-blocked micro-kernel", _two_d),
        Rung(6, pool.matmul, f"OpenBLAS single-threaded per block of rows, on Numba's pool; "
             f"one thread below {pool.PARALLEL_MIN:,} multiply-adds or {pool.MIN_ROWS} rows",
             pool.fits),
    )),
)
