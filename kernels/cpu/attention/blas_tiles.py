"""Attention v5: BLAS tile products around two fused Numba row kernels.

Same contract and signatures as every version in this folder (output buffers first); the ladder
and the math are in ``__init__.py``.

Why: the flash kernels v3/v4 compute their block products in Numba, at 20-40 GFLOP/s per core;
OpenBLAS does a (128, 64) x (64, 256) product at about 100-130 GFLOP/s on two cores. v5 hands
every product to the BLAS and keeps in Numba only what the BLAS cannot do: the causal softmax
(forward) and p = exp(s - lse), ds = p (dp - delta) scale (backward), each one parallel pass over
a score tile that is still in cache.

Tiles: a chunk of batch rows x all heads x a block of RB query rows against the keys that block
may see. The score tile (bc, H, nr, kend) stays under TILE elements, so memory does not grow
with the batch (no (B, H, T, T) array; at the small config a tile is 2 x 6 x 128 x 256 floats,
1.5 MiB) and the softmax pass finds it in cache. With ``causal``, query rows r0..r1 see keys
0..r1 + off only, so a block's products stop at kend = r1 + off: with RB = 128 and T = 256 the
products do 3/4 of the full-matrix work, at T = 1024 about 9/16.

Per tile, forward:   s = q k^T (BLAS);  p = softmax(scale s) in place, lse saved (Numba);
                     o = p v (BLAS, written straight into o, which may be a strided view).
Per tile, backward:  s = q k^T, dp = do v^T (BLAS);  p = exp(scale s - lse), ds = p (dp - delta)
                     scale in place, delta = rowsum(do o) (Numba);  dq = ds k, dk += ds^T q,
                     dv += p^T do (BLAS).

q, k, v, o, do, dq, dk, dv may be strided views (e.g. heads split out of a fused (B, T, 3C) qkv
buffer without a copy): np.matmul hands any view with one unit stride to the BLAS directly.

The products run with the BLAS single-threaded (kernels/cpu/_blas.py): the row kernels run on
Numba's OpenMP pool, and OpenBLAS's own worker, spinning after each multi-threaded call, would
hold the core those threads need.
"""

import math

import numpy as np
from numba import njit, prange

from .. import _blas
from .._fastmath import FASTMATH, fast_exp, fast_max
from .._serial import pick

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy", nogil=True)
TILE = 1 << 18  # score-tile elements (1 MiB float32): one chunk of batch x heads x query block
RB = 128  # query rows per block: causal blocks skip the keys after the block's last row
NEG_BIG = -1e30


@njit(**_JIT)
def _row(r, H, nr, kend, r0, off, causal):
    # flat row r of a (bc, H, nr, .) tile -> (b, h, i) and n, the keys query r0 + i may see
    b = r // (H * nr)
    h = (r // nr) % H
    i = r % nr
    return b, h, i, (min(kend, r0 + i + off + 1) if causal else kend)


@njit(**_JIT)
def softmax_row(row, n, kend, scale):
    """row[:n] = softmax(scale row[:n]) in place, row[n:kend] = 0 (keys the query may not see;
    the next product reads whole rows); returns lse = log sum exp(scale row[:n]). Shared with
    attention v7 (micro.py). A C-contiguous row vectorises; a strided one did not."""
    zero = row.dtype.type(0.0)
    m = row.dtype.type(NEG_BIG)
    for j in range(n):
        m = fast_max(m, row[j] * scale)
    total = zero
    for j in range(n):
        e = fast_exp(row[j] * scale - m)
        row[j] = e
        total += e
    inv = row.dtype.type(1.0) / total
    for j in range(n):
        row[j] *= inv
    for j in range(n, kend):
        row[j] = zero
    return m + math.log(total)


@njit(**_JIT)
def softmax_row_backward(srow, drow, n, kend, lse, delta, scale):
    """srow: raw scores -> p = exp(scale s - lse); drow: dp -> ds = p (dp - delta) scale; both
    zero on [n, kend). delta = rowsum(do o) = rowsum(p dp)."""
    zero = srow.dtype.type(0.0)
    for j in range(n):
        p = fast_exp(srow[j] * scale - lse)
        srow[j] = p
        drow[j] = p * (drow[j] - delta) * scale
    for j in range(n, kend):
        srow[j] = zero
        drow[j] = zero


@njit(parallel=True, **_JIT)
def _softmax_rows(s, lse, scale, r0, off, causal):
    # s: (bc, H, nr, kend) raw scores q k^T, replaced by p; lse: (bc, H, nr) view, written.
    # Row i of the tile is query r0 + i; with causal it sees keys 0..r0 + i + off.
    bc, H, nr, kend = s.shape
    for r in prange(bc * H * nr):
        b, h, i, n = _row(r, H, nr, kend, r0, off, causal)
        lse[b, h, i] = softmax_row(s[b, h, i], n, kend, scale)


@njit(parallel=True, **_JIT)
def _softmax_rows_backward(s, dp, lse, do, o, scale, r0, off, causal):
    # s: (bc, H, nr, kend) raw scores -> p;  dp: do v^T -> ds = p (dp - delta) scale.
    # lse: (bc, H, nr); do, o: (bc, H, nr, D) views of this block's rows.
    bc, H, nr, kend = s.shape
    D = do.shape[3]
    zero = s.dtype.type(0.0)
    for r in prange(bc * H * nr):
        b, h, i, n = _row(r, H, nr, kend, r0, off, causal)
        delta = zero  # rowsum(do * o) == rowsum(p * dp)
        for d in range(D):
            delta += do[b, h, i, d] * o[b, h, i, d]
        softmax_row_backward(s[b, h, i], dp[b, h, i], n, kend, lse[b, h, i], delta, scale)


def _plan(B, H, Tq, Tk, causal):
    """Query blocks [(r0, r1, kend)] and the batch chunk size bc for the tile budget."""
    off = Tk - Tq
    rb = Tq if Tq <= RB or not causal else RB  # blocks only pay where they skip keys
    blocks = [(r0, min(Tq, r0 + rb), min(Tk, min(Tq, r0 + rb) + off) if causal else Tk)
              for r0 in range(0, Tq, rb)]
    bc = max(1, min(B, TILE // (H * rb * Tk)))
    return blocks, bc


def attention_forward_v5(o, lse, q, k, v, scale, causal):
    with _blas.single_threaded():  # (see the module docstring: one thread pool at a time)
        _forward_tiles(o, lse, q, k, v, scale, causal)


def attention_backward_v5(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    with _blas.single_threaded():
        _backward_tiles(dq, dk, dv, do, q, k, v, o, lse, scale, causal)


def _forward_tiles(o, lse, q, k, v, scale, causal):
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    blocks, bc = _plan(B, H, Tq, Tk, causal)
    scale = q.dtype.type(scale)
    for b0 in range(0, B, bc):
        b1 = min(B, b0 + bc)
        kt = k[b0:b1].swapaxes(-1, -2)  # (bc, H, D, Tk) view
        for r0, r1, kend in blocks:
            s = np.matmul(q[b0:b1, :, r0:r1], kt[..., :kend])  # (bc, H, nr, kend)
            pick(_softmax_rows, s.size)(s, lse[b0:b1, :, r0:r1], scale, r0, off, causal)
            np.matmul(s, v[b0:b1, :, :kend], out=o[b0:b1, :, r0:r1])


def _backward_tiles(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    blocks, bc = _plan(B, H, Tq, Tk, causal)
    scale = q.dtype.type(scale)
    # The last block sees every key it will ever see: it writes dk, dv; earlier blocks add.
    blocks = blocks[::-1]
    for b0 in range(0, B, bc):
        b1 = min(B, b0 + bc)
        kt, vt = k[b0:b1].swapaxes(-1, -2), v[b0:b1].swapaxes(-1, -2)  # (bc, H, D, Tk)
        for n, (r0, r1, kend) in enumerate(blocks):
            qr, dor = q[b0:b1, :, r0:r1], do[b0:b1, :, r0:r1]  # (bc, H, nr, D)
            s = np.matmul(qr, kt[..., :kend])  # (bc, H, nr, kend)
            dp = np.matmul(dor, vt[..., :kend])
            pick(_softmax_rows_backward, s.size)(  # s -> p, dp -> ds
                s, dp, lse[b0:b1, :, r0:r1], dor, o[b0:b1, :, r0:r1], scale, r0, off, causal)
            np.matmul(dp, k[b0:b1, :, :kend], out=dq[b0:b1, :, r0:r1])
            dsT, pT = dp.swapaxes(-1, -2), s.swapaxes(-1, -2)  # (bc, H, kend, nr)
            if n == 0:
                np.matmul(dsT, qr, out=dk[b0:b1, :, :kend])
                np.matmul(pT, dor, out=dv[b0:b1, :, :kend])
                if kend < Tk:  # keys no query of the chunk sees (Tk > Tq + off cannot happen)
                    dk[b0:b1, :, kend:] = 0
                    dv[b0:b1, :, kend:] = 0
            else:
                dk[b0:b1, :, :kend] += np.matmul(dsT, qr)
                dv[b0:b1, :, :kend] += np.matmul(pT, dor)
