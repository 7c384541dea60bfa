"""Attention v7: every product on minillm's own register-blocked micro-kernel, one head per task.

Same contract and signatures as every version in this folder (output buffers first); the ladder
and the math are in ``__init__.py``.

Why: v5 hands its tile products to the BLAS, one small call per head per tile, each paying the
call's overhead and, threaded, a hand-off to the BLAS's own worker. v7 calls no BLAS: a prange over
the B * H heads, each head computed by one thread from start to end, every product on the
micro-kernel of matmul v5 (kernels/cpu/_microkernel.py: an MR x NR block of the result in
vector registers, one FMA per vector and row per step of the depth).

The micro-kernel reads its B operand as rows of NR contiguous elements, its A operand through
any strides. So per head the B operands (k^T and v in the forward; k^T, v^T, k, q and do in
the backward, each T x D, under 1% of the head's work at T = 256) are packed once into slivers
of NR columns (matmul/packed.py's layout), and the A operands (q and do rows, the score tile,
its transpose) are read in place: the score tile is never copied. A whole MR x NR block is
written straight into its output; only edge blocks go through a scratch tile. Query rows go
in blocks of RB; with ``causal`` a block's products stop at the last key its last row may see
(at T = 256 about 56% of the full-matrix work).

Forward, per block:   s = q k^T;  p = softmax(scale s) in place, lse saved;  o = p v.
Backward, per block:  s = q k^T, dp = do v^T;  p = exp(scale s - lse),
                      ds = p (dp - delta) scale, delta = rowsum(do o);
                      dq = ds k,  dk += ds^T q,  dv += p^T do.
Memory: per thread two (RB, Tk) score tiles and the packed panels; never a (B, H, T, T) array.
"""

import numpy as np
from numba import njit, prange

from .._fastmath import FASTMATH
from .._microkernel import MR, NV, VECTOR_BYTES, micro
from .._serial import pick
from ..matmul.packed import _cdiv, _pack_a, _pack_b
from .blas_tiles import softmax_row, softmax_row_backward

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy", nogil=True)
RB = 8 * MR  # query rows per block: 48 (AVX2) or 96 (AVX-512)


@njit(**_JIT)
def _nr(x):
    return NV * VECTOR_BYTES // x.itemsize  # columns of the register block


@njit(**_JIT)
def _pack(bp, x):
    # B = x, (depth, n) -> bp in slivers of nr columns: sliver s at s * depth * nr, row p at
    # p * nr; columns past n are zero (matmul v5's layout, one panel as deep as x)
    depth, n = x.shape
    nr = _nr(x)
    for s in range(_cdiv(n, nr)):
        _pack_b(bp, x, 0, depth, 0, n, s, nr)


@njit(**_JIT)
def _pack_t(bp, x):
    # B = x^T with x (n, depth) read row by row -> bp, the same layout as _pack(bp, x.T)
    n, depth = x.shape
    nr = _nr(x)
    for s in range(_cdiv(n, nr)):
        base = s * depth * nr
        for jj in range(nr):
            j = s * nr + jj
            if j < n:
                src = x[j]
                for p in range(depth):
                    bp[base + p * nr + jj] = src[p]
            else:
                for p in range(depth):
                    bp[base + p * nr + jj] = 0.0


@njit(**_JIT)
def _gemm(out, a, bp, boff, bsl, kc, accumulate, abuf, tile):
    # out (M, N) (+)= a[:, :kc] @ B[:kc, :N]. a: (M, >= kc) view with any strides, read in place
    # (a last partial sliver of rows is copied to abuf, zero-padded); B packed, sliver s at
    # boff + s * bsl, row p at p * nr.
    M, N = out.shape
    nr = _nr(out)
    isz = a.itemsize
    ars, acs = a.strides[0] // isz, a.strides[1] // isz
    ldc = out.strides[0] // isz
    direct = out.strides[1] == isz  # whole blocks go straight into out
    for r in range(0, M, MR):
        rows = min(MR, M - r)
        if rows < MR:
            _pack_a(abuf, a, r, rows, 0, kc)
        for s in range(_cdiv(N, nr)):
            j0 = s * nr
            cols = min(nr, N - j0)
            if rows == MR and cols == nr and direct:
                micro(kc, a, r * ars, ars, acs, bp, boff + s * bsl, nr, out, r * ldc + j0, ldc,
                      accumulate)
                continue
            if rows < MR:
                micro(kc, abuf, 0, 1, MR, bp, boff + s * bsl, nr, tile, 0, nr, False)
            else:
                micro(kc, a, r * ars, ars, acs, bp, boff + s * bsl, nr, tile, 0, nr, False)
            for i in range(rows):
                orow = out[r + i]
                t = i * nr
                if accumulate:
                    for j in range(cols):
                        orow[j0 + j] += tile[t + j]
                else:
                    for j in range(cols):
                        orow[j0 + j] = tile[t + j]


@njit(**_JIT)
def _buffers(q, Tk):
    # per-task scratch: a score tile, an edge sliver of a, the register tile
    D = q.shape[1]
    s = np.empty((RB, Tk), dtype=q.dtype)
    abuf = np.empty(MR * max(D, Tk, RB), dtype=q.dtype)
    tile = np.empty(MR * _nr(q), dtype=q.dtype)
    return s, abuf, tile


@njit(**_JIT)
def _panel(rows, cols, x):
    # a packed B panel of a (rows, cols) operand
    nr = _nr(x)
    return np.empty(_cdiv(cols, nr) * nr * rows, dtype=x.dtype)


@njit(**_JIT)
def _head_forward(o, lse, q, k, v, scale, causal):
    # one head: q, o (Tq, D); k, v (Tk, D); lse (Tq,)
    Tq, D = q.shape
    Tk = k.shape[0]
    off = Tk - Tq
    nr = _nr(q)
    s, abuf, tile = _buffers(q, Tk)
    ktp, vp = _panel(D, Tk, q), _panel(Tk, D, q)
    _pack_t(ktp, k)  # K^T: (D, Tk)
    _pack(vp, v)  # (Tk, D)
    for r0 in range(0, Tq, RB):
        r1 = min(Tq, r0 + RB)
        nrr = r1 - r0
        kend = min(Tk, r1 + off) if causal else Tk
        st = s[:nrr, :kend]
        _gemm(st, q[r0:r1], ktp, 0, D * nr, D, False, abuf, tile)  # (nrr, kend) = q k^T
        for i in range(nrr):
            n = min(kend, r0 + i + off + 1) if causal else kend
            lse[r0 + i] = softmax_row(s[i], n, kend, scale)  # s[i]: C-contiguous (st[i] is not)
        _gemm(o[r0:r1], st, vp, 0, Tk * nr, kend, False, abuf, tile)  # (nrr, D) = p v


@njit(**_JIT)
def _head_backward(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    Tq, D = q.shape
    Tk = k.shape[0]
    off = Tk - Tq
    nr = _nr(q)
    s, abuf, tile = _buffers(q, Tk)
    ds = np.empty_like(s)  # the second score tile: dp, then ds
    ktp, vtp = _panel(D, Tk, q), _panel(D, Tk, q)
    kp, qp, dop = _panel(Tk, D, q), _panel(Tq, D, q), _panel(Tq, D, q)
    _pack_t(ktp, k)
    _pack_t(vtp, v)
    _pack(kp, k)
    _pack(qp, q)
    _pack(dop, do)
    zero = q.dtype.type(0.0)
    dk[:, :] = zero
    dv[:, :] = zero
    for r0 in range(0, Tq, RB):
        r1 = min(Tq, r0 + RB)
        nrr = r1 - r0
        kend = min(Tk, r1 + off) if causal else Tk
        st, dst = s[:nrr, :kend], ds[:nrr, :kend]
        _gemm(st, q[r0:r1], ktp, 0, D * nr, D, False, abuf, tile)  # s = q k^T
        _gemm(dst, do[r0:r1], vtp, 0, D * nr, D, False, abuf, tile)  # dp = do v^T
        for i in range(nrr):
            n = min(kend, r0 + i + off + 1) if causal else kend
            delta = zero  # rowsum(do * o) == rowsum(p * dp)
            for d in range(D):
                delta += do[r0 + i, d] * o[r0 + i, d]
            softmax_row_backward(s[i], ds[i], n, kend, lse[r0 + i], delta, scale)
        _gemm(dq[r0:r1], dst, kp, 0, Tk * nr, kend, False, abuf, tile)  # dq = ds k
        _gemm(dk[:kend], dst.T, qp, r0 * nr, Tq * nr, nrr, True, abuf, tile)  # dk += ds^T q
        _gemm(dv[:kend], st.T, dop, r0 * nr, Tq * nr, nrr, True, abuf, tile)  # dv += p^T do


@njit(parallel=True, **_JIT)
def _forward(o, lse, q, k, v, scale, causal):
    B, H = q.shape[:2]
    for t in prange(B * H):  # one head per task, computed by one thread from start to end
        b, h = t // H, t % H
        _head_forward(o[b, h], lse[b, h], q[b, h], k[b, h], v[b, h], scale, causal)


@njit(parallel=True, **_JIT)
def _backward(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    B, H = q.shape[:2]
    for t in prange(B * H):
        b, h = t // H, t % H
        _head_backward(dq[b, h], dk[b, h], dv[b, h], do[b, h], q[b, h], k[b, h], v[b, h],
                       o[b, h], lse[b, h], scale, causal)


def _work(q, k):
    return q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]  # score elements B H Tq Tk


def attention_forward_v7(o, lse, q, k, v, scale, causal):
    pick(_forward, _work(q, k))(o, lse, q, k, v, scale, causal)


def attention_backward_v7(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    pick(_backward, _work(q, k))(dq, dk, dv, do, q, k, v, o, lse, scale, causal)
