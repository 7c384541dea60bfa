"""Matmul v1-v4: the classic loop-order, cache-blocking and threading steps, in Numba.

out = a @ b with a: (M, K), b: (K, N), out: (M, N), contiguous. The ladder, its measurements and
the math are in ``__init__.py``.
"""

import numpy as np
from numba import njit, prange

from .._fastmath import FASTMATH

MB, KB, NB = 64, 128, 512  # a (KB, NB) float32 tile of b is 256 KiB: fits in the 2 MiB L2


@njit(fastmath=FASTMATH, cache=True)
def matmul_v1(out, a, b):
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        for j in range(N):
            acc = np.float32(0.0)  # stays float32 for float32 inputs, widens for float64
            for k in range(K):
                acc += a[i, k] * b[k, j]  # b[k, j]: stride N, one cache line per FMA
            out[i, j] = acc


@njit(fastmath=FASTMATH, cache=True)
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


@njit(fastmath=FASTMATH, cache=True)
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


@njit(fastmath=FASTMATH, cache=True)
def matmul_v3(out, a, b):
    M, K = a.shape
    N = b.shape[1]
    out[:] = 0.0
    for j0 in range(0, N, NB):
        for k0 in range(0, K, KB):  # b[k0:k0+KB, j0:j0+NB] is reused by every row block
            for i0 in range(0, M, MB):
                _tile(out, a, b, i0, min(i0 + MB, M), k0, min(k0 + KB, K), j0, min(j0 + NB, N))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
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
