"""Matmul v5: the BLAS's own method (packing + a register-blocked SIMD micro-kernel), in Numba.

out = a @ b with a: (M, K), b: (K, N), any strides (a transposed view costs nothing), float32
or float64. Continues the ladder of ``__init__.py``, whose v3/v4 (loops.py) tile for the caches
but leave the inner loop to LLVM's auto-vectoriser and stop at 20-40 GFLOP/s per core.

The loop nest is the one GotoBLAS/BLIS made standard; each level exists for one cache:

  for p0 in K by KC:                       a (KC x NC) panel of b is packed once (in parallel)
    for j0 in N by NC:                     into slivers of NR columns, contiguous, zero-padded
      parallel for each block of rows:     a (MC x KC) block of a is packed by its thread into
                                           slivers of MR rows (stays in L2: 240 x 256 x 4 B)
        for each b sliver (KC x NR):       stays in L1 (256 x 32 x 4 B = 32 KiB)
          for each a sliver (MR x KC):     streamed from L2
            micro-kernel: an MR x NR block of out in vector registers, one FMA per
            (vector, row) per step of k (kernels/cpu/_microkernel.py), then added into out

Packing is what makes the micro-kernel's loads unit-stride whatever a's and b's strides are,
and pads the edges with zeros so the micro-kernel never branches; only the copy of its tile
into out looks at the edges. The row blocks are a multiple of the thread count, so both cores
get the same work.

Measured: see the table in ``__init__.py``.
"""

import numba
import numpy as np
from numba import njit, prange

from .._fastmath import FASTMATH
from .._microkernel import MR, NV, VECTOR_BYTES, micro

KC = 256  # depth of a packed panel: an NR-column sliver of b is KC x NR, 32 KiB float32 (L1)
NC = 4096  # columns of b packed at once
MC = 240  # most rows of a packed per block (a multiple of MR for both MR = 12 and 6)

_JIT = dict(fastmath=FASTMATH, cache=True, nogil=True)


@njit(**_JIT)
def _cdiv(a, b):
    return (a + b - 1) // b


@njit(**_JIT)
def _pack_b(bp, b, p0, kc, j0, nc, s, nr):
    # b[p0:p0+kc, j0+s*nr : +nr] -> bp[s*kc*nr:], row p at p*nr, columns past nc zero
    base = s * kc * nr
    c0 = j0 + s * nr
    cols = min(nr, j0 + nc - c0)
    for p in range(kc):
        row = base + p * nr
        for j in range(cols):
            bp[row + j] = b[p0 + p, c0 + j]
        for j in range(cols, nr):
            bp[row + j] = 0.0


@njit(**_JIT)
def _pack_a(ap, a, i0, mc, p0, kc):
    # a[i0:i0+mc, p0:p0+kc] -> slivers of MR rows; sliver r at r*kc, step p at p*MR, rows past mc zero
    for r in range(0, mc, MR):
        base = r * kc
        rows = min(MR, mc - r)
        for i in range(rows):
            src = i0 + r + i
            for p in range(kc):
                ap[base + p * MR + i] = a[src, p0 + p]
        for i in range(rows, MR):
            for p in range(kc):
                ap[base + p * MR + i] = 0.0


@njit(**_JIT)
def _block(out, ap, bp, tile, i0, mc, kc, j0, nc, nr, first):
    # out[i0:i0+mc, j0:j0+nc] (+)= packed a block @ packed b panel
    for s in range(_cdiv(nc, nr)):
        c0 = j0 + s * nr
        cols = min(nr, j0 + nc - c0)
        for r in range(0, mc, MR):
            micro(kc, ap, r * kc, 1, MR, bp, s * kc * nr, nr, tile, 0, nr, False)
            rows = min(MR, mc - r)
            for i in range(rows):
                orow = out[i0 + r + i]
                t = i * nr
                if first:
                    for j in range(cols):
                        orow[c0 + j] = tile[t + j]
                else:
                    for j in range(cols):
                        orow[c0 + j] += tile[t + j]


@njit(parallel=True, **_JIT)
def _matmul_v5(out, a, b, nth):
    # nth: Numba's thread count, an argument (numba.get_num_threads() inside would stop caching)
    M, K = a.shape
    N = b.shape[1]
    nr = NV * VECTOR_BYTES // a.itemsize
    if K == 0:
        out[:] = 0.0
        return
    # row blocks: a multiple of the thread count, each a multiple of MR and at most MC rows
    nblk = _cdiv(_cdiv(M, MC), nth) * nth
    mc_blk = _cdiv(_cdiv(M, nblk), MR) * MR
    nblk = _cdiv(M, mc_blk)
    for p0 in range(0, K, KC):
        kc = min(KC, K - p0)
        for j0 in range(0, N, NC):
            nc = min(NC, N - j0)
            ns = _cdiv(nc, nr)
            bp = np.empty(ns * kc * nr, dtype=a.dtype)
            for s in prange(ns):
                _pack_b(bp, b, p0, kc, j0, nc, s, nr)
            for blk in prange(nblk):
                i0 = blk * mc_blk
                mc = min(mc_blk, M - i0)
                ap = np.empty(_cdiv(mc, MR) * MR * kc, dtype=a.dtype)
                tile = np.empty(MR * nr, dtype=a.dtype)
                _pack_a(ap, a, i0, mc, p0, kc)
                _block(out, ap, bp, tile, i0, mc, kc, j0, nc, nr, p0 == 0)


def matmul_v5(out, a, b):
    _matmul_v5(out, a, b, numba.get_num_threads())
