"""Matrix multiply on the CPU (Numba): the classic optimisation ladder, for teaching and benchmarks.

out = a @ b with a: (M, K), b: (K, N), out: (M, N); 2 * M * N * K FLOPs. The dispatcher keeps
matmul on the BLAS (``a @ b``); these versions show where the BLAS's speed comes from.

Measured with ``python benchmarks/bench_matmul.py`` (float32, 2 threads, fastest call, one run
on a quiet 2-core AMD EPYC Zen 3, AVX2, whose FP32 peak is about 2 x 94 GFLOP/s):

  shape (M,K)x(K,N)         v1     v2     v3     v4     v5     OpenBLAS  (GFLOP/s)
  (2048,384)x(384,1152)     -     22.1   23.3   49.4   78.3   174.2
  (768,128)x(128,512)       0.9   26.5   35.3   48.8   76.2   172.8

v5's micro-kernel alone runs at 94 GFLOP/s on one core, the BLAS's speed; what v5 still loses
is outside it (the copy of each register tile into out, packing, the second pass over out when K
spans two panels). An earlier run on an Intel machine under heavy load put v3 ahead of the BLAS
at the small shape, which says more about the load than about v3.

  v1  naive (i, j, k): the inner loop walks down a column of b, N floats apart, so every FMA
      misses cache and nothing vectorises.
  v2  loop order (i, k, j): the inner loop is out[i, :] += a[i, k] * b[k, :], contiguous rows,
      so LLVM emits AVX-512/AVX2 FMAs.
  v3  cache blocking: (MB, KB) x (KB, NB) tiles so a block of b stays in L2 while MB rows of a
      stream over it, and the k loop unrolled by four so each out row is loaded and stored once
      per four FMAs (the v2 loop is bound by L1 load/store traffic, not by FMAs).
  v4  v3 in parallel: prange over blocks of MB output rows (each thread owns its rows, no races).
  v5  (matmul_packed.py) the BLAS's own method: a and b packed into contiguous slivers, and a
      register-blocked micro-kernel (kernels/cpu/_microkernel.py, LLVM IR through a Numba
      intrinsic) that keeps an MR x NR block of out in vector registers for a whole pass over k.
      The micro-kernel alone runs at about 94 GFLOP/s on one core of an AVX2 Zen 3 (as fast as
      OpenBLAS per core); the whole v5 at about half the BLAS (table above).
"""

import numpy as np
from numba import njit, prange

from .matmul_packed import matmul_v5

MB, KB, NB = 64, 128, 512  # a (KB, NB) float32 tile of b is 256 KiB: fits in the 2 MiB L2


@njit(fastmath=True, cache=True)
def matmul_v1(out, a, b):
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        for j in range(N):
            acc = np.float32(0.0)  # stays float32 for float32 inputs, widens for float64
            for k in range(K):
                acc += a[i, k] * b[k, j]  # b[k, j]: stride N, one cache line per FMA
            out[i, j] = acc


@njit(fastmath=True, cache=True)
def matmul_v2(out, a, b):
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        orow = out[i]  # (N,)
        orow[:] = 0.0
        for k in range(K):
            x, brow = a[i, k], b[k]
            for j in range(N):
                orow[j] += x * brow[j]


@njit(fastmath=True, cache=True)
def _tile(out, a, b, i0, i1, k0, k1, j0, j1):
    # out[i0:i1, j0:j1] += a[i0:i1, k0:k1] @ b[k0:k1, j0:j1], k unrolled by four
    nj = j1 - j0
    k4 = k0 + (k1 - k0) // 4 * 4
    for i in range(i0, i1):
        orow, arow = out[i, j0:j1], a[i]
        for k in range(k0, k4, 4):
            x0, x1, x2, x3 = arow[k], arow[k + 1], arow[k + 2], arow[k + 3]
            b0, b1 = b[k, j0:j1], b[k + 1, j0:j1]
            b2, b3 = b[k + 2, j0:j1], b[k + 3, j0:j1]
            for j in range(nj):
                orow[j] += x0 * b0[j] + x1 * b1[j] + x2 * b2[j] + x3 * b3[j]
        for k in range(k4, k1):
            x, brow = arow[k], b[k, j0:j1]
            for j in range(nj):
                orow[j] += x * brow[j]


@njit(fastmath=True, cache=True)
def matmul_v3(out, a, b):
    M, K = a.shape
    N = b.shape[1]
    out[:] = 0.0
    for j0 in range(0, N, NB):
        for k0 in range(0, K, KB):  # b[k0:k0+KB, j0:j0+NB] is reused by every row block
            for i0 in range(0, M, MB):
                _tile(out, a, b, i0, min(i0 + MB, M), k0, min(k0 + KB, K), j0, min(j0 + NB, N))


@njit(parallel=True, fastmath=True, cache=True)
def matmul_v4(out, a, b):
    M, K = a.shape
    N = b.shape[1]
    nblk = (M + MB - 1) // MB
    for blk in prange(nblk):  # each thread owns MB rows of out
        i0 = blk * MB
        i1 = min(i0 + MB, M)
        for i in range(i0, i1):
            for j in range(N):
                out[i, j] = 0.0
        for j0 in range(0, N, NB):
            for k0 in range(0, K, KB):
                _tile(out, a, b, i0, i1, k0, min(k0 + KB, K), j0, min(j0 + NB, N))


VERSIONS = {1: matmul_v1, 2: matmul_v2, 3: matmul_v3, 4: matmul_v4, 5: matmul_v5}


def matmul_version(version, a, b):
    """out = a @ b for 2-D a (M, K), b (K, N) with the chosen Numba version."""
    dtype = np.result_type(a, b)
    a, b = np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul_version needs (M, K) @ (K, N), got {a.shape} @ {b.shape}")
    out = np.empty((a.shape[0], b.shape[1]), dtype=dtype)
    VERSIONS[version](out, a, b)
    return out
