"""Attention v1-v4: plain loops, one thread per head with an online softmax, and flash-style
blocks (FlashAttention, Dao et al. 2022; the backward in FlashAttention-2's order, Dao 2023).

Same contract and signatures as every version in this folder (output buffers first, then inputs,
then scalars); the ladder and the math are in ``__init__.py``. v1 and v2 keep one query row at a
time; v3 and v4 work on (BQ, BK) blocks so that BQ query rows share every loaded key block, with
the reduction of each block product plain (v3) or unrolled by four (v4).

Why v3/v4 are not faster than about 2x: LLVM picks 256-bit vectors on this CPU
(prefer-vector-width=256) and each block product's inner loop is only D = 64 (8 ymm FMAs) or
BK = 64 long, so loop overhead, alias checks and the accumulator load/store per FMA keep a
product at about 20-40 GFLOP/s per core, a tenth of peak. v5 hands the products to the BLAS;
v7 runs them on a register-blocked micro-kernel.
"""

import math

import numpy as np
from numba import njit, prange

from .._fastmath import FASTMATH, fast_exp  # vectorisable exp (range reduction + polynomial)

BQ = 16  # query rows per block: they share each key block while it sits in L1
BK = 64  # keys per block: a (D, BK) slice of K^T and a (BK, D) slice of V, 16 KiB each at D=64
NEG_BIG = -1e30  # "minus infinity" that fastmath (which assumes no infs) cannot break


@njit(fastmath=FASTMATH, cache=True)
def _fill(a, x):
    # a[...] = x as a plain loop (inside a prange body an array expression becomes a nested
    # parfor, which costs compile time and buys nothing)
    flat = a.reshape(a.size)
    for i in range(flat.size):
        flat[i] = x


# --------------------------------------------------------------------------- v1: plain loops
@njit(fastmath=FASTMATH, cache=True)
def attention_forward_v1(o, lse, q, k, v, scale, causal):
    # one query row at a time: s (Tk,) scores, softmax, o_i = sum_j p_j v_j
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    s = np.empty(Tk, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                n = min(Tk, off + i + 1) if causal else Tk  # keys this row may see
                m = NEG_BIG
                for j in range(n):
                    acc = 0.0
                    for d in range(D):
                        acc += q[b, h, i, d] * k[b, h, j, d]
                    s[j] = acc * scale
                    m = max(m, s[j])
                l = 0.0
                for j in range(n):
                    s[j] = math.exp(s[j] - m)
                    l += s[j]
                for d in range(D):
                    acc = 0.0
                    for j in range(n):
                        acc += s[j] * v[b, h, j, d]
                    o[b, h, i, d] = acc / l
                lse[b, h, i] = m + math.log(l)


@njit(fastmath=FASTMATH, cache=True)
def attention_backward_v1(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    # one query row at a time: rebuild p_j = exp(s_j - lse_i), then
    # dv_j += p_j do_i;  ds_j = p_j (do_i . v_j - delta_i);  dq_i += ds_j k_j;  dk_j += ds_j q_i
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    dq[:] = 0.0
    dk[:] = 0.0
    dv[:] = 0.0
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                n = min(Tk, off + i + 1) if causal else Tk
                delta = 0.0  # rowsum(do * o) == rowsum(p * dp)
                for d in range(D):
                    delta += do[b, h, i, d] * o[b, h, i, d]
                for j in range(n):
                    sj = 0.0
                    dpj = 0.0
                    for d in range(D):
                        sj += q[b, h, i, d] * k[b, h, j, d]
                        dpj += do[b, h, i, d] * v[b, h, j, d]
                    p = math.exp(sj * scale - lse[b, h, i])
                    ds = p * (dpj - delta) * scale
                    for d in range(D):
                        dv[b, h, j, d] += p * do[b, h, i, d]
                        dq[b, h, i, d] += ds * k[b, h, j, d]
                        dk[b, h, j, d] += ds * q[b, h, i, d]


# --------------------------------------------------------------------------- v2: prange over heads
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def attention_forward_v2(o, lse, q, k, v, scale, causal):
    # each (b, h) is independent: one thread per head. Per row, one pass over the keys with a
    # running max m and sum l; when m grows, the partial o and l are rescaled by exp(m_old - m).
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        acc = np.empty(D, dtype=q.dtype)  # (D,) running o_i * l
        for i in range(Tq):
            n = min(Tk, off + i + 1) if causal else Tk
            m = NEG_BIG
            l = 0.0
            _fill(acc, 0.0)
            for j in range(n):
                sj = 0.0
                for d in range(D):
                    sj += q[b, h, i, d] * k[b, h, j, d]
                sj *= scale
                if sj > m:
                    alpha = math.exp(m - sj)
                    l *= alpha
                    for d in range(D):
                        acc[d] *= alpha
                    m = sj
                p = math.exp(sj - m)
                l += p
                for d in range(D):
                    acc[d] += p * v[b, h, j, d]
            for d in range(D):
                o[b, h, i, d] = acc[d] / l
            lse[b, h, i] = m + math.log(l)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def attention_backward_v2(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    # v1 with one thread per (b, h): each head writes only its own dq, dk, dv slices, no races
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        _fill(dq[b, h], 0.0)
        _fill(dk[b, h], 0.0)
        _fill(dv[b, h], 0.0)
        for i in range(Tq):
            n = min(Tk, off + i + 1) if causal else Tk
            delta = 0.0
            for d in range(D):
                delta += do[b, h, i, d] * o[b, h, i, d]
            for j in range(n):
                sj = 0.0
                dpj = 0.0
                for d in range(D):
                    sj += q[b, h, i, d] * k[b, h, j, d]
                    dpj += do[b, h, i, d] * v[b, h, j, d]
                p = math.exp(sj * scale - lse[b, h, i])
                ds = p * (dpj - delta) * scale
                for d in range(D):
                    dv[b, h, j, d] += p * do[b, h, i, d]
                    dq[b, h, i, d] += ds * k[b, h, j, d]
                    dk[b, h, j, d] += ds * q[b, h, i, d]


# --------------------------------------------------------------------------- block products
# Three small matrix products cover the forward and the backward. The innermost loop always
# runs along a contiguous row (BK keys or D channels), which LLVM turns into AVX-512 FMAs.
# Rows are taken as 1-D views and indexed by the bare loop counter: Numba wraps negative
# indices, and with an index like b0 + c (sign unknown) that check blocks vectorisation.
@njit(fastmath=FASTMATH, cache=True)
def _abt_v3(out, a, a0, bt, b0, nr, nc, K):
    # out[r, c] = sum_t a[a0 + r, t] * bt[t, b0 + c]     out: (BQ, BK)  a: (T, K)  bt: (K, T)
    for r in range(nr):
        orow, arow = out[r, :nc], a[a0 + r]
        orow[:] = 0.0
        for t in range(K):
            x, brow = arow[t], bt[t, b0:b0 + nc]
            for c in range(nc):
                orow[c] += x * brow[c]


@njit(fastmath=FASTMATH, cache=True)
def _acc_ab_v3(out, o0, a, b, b0, nr, nc, K):
    # out[o0 + r, :] += sum_c a[r, c] * b[b0 + c, :]     out, b: (T, K)  a: (BQ, BK)
    for r in range(nr):
        orow = out[o0 + r]
        for c in range(nc):
            x, brow = a[r, c], b[b0 + c]
            for t in range(K):
                orow[t] += x * brow[t]


@njit(fastmath=FASTMATH, cache=True)
def _acc_atb_v3(out, a, b, b0, nr, nc, K):
    # out[c, :] += sum_r a[r, c] * b[b0 + r, :]          out: (BK, K)  a: (BQ, BK)  b: (T, K)
    for c in range(nc):
        orow = out[c]
        for r in range(nr):
            x, brow = a[r, c], b[b0 + r]
            for t in range(K):
                orow[t] += x * brow[t]


@njit(fastmath=FASTMATH, cache=True)
def _abt_v4(out, a, a0, bt, b0, nr, nc, K):
    # as _abt_v3 with the t (reduction) loop unrolled by four: one load and store of the
    # out row per four FMAs instead of per FMA (the v3 loop is bound by L1 traffic)
    t4 = K - K % 4
    for r in range(nr):
        orow, arow = out[r, :nc], a[a0 + r]
        orow[:] = 0.0
        for t in range(0, t4, 4):
            x0, x1, x2, x3 = arow[t], arow[t + 1], arow[t + 2], arow[t + 3]
            b0r, b1r = bt[t, b0:b0 + nc], bt[t + 1, b0:b0 + nc]
            b2r, b3r = bt[t + 2, b0:b0 + nc], bt[t + 3, b0:b0 + nc]
            for c in range(nc):
                orow[c] += x0 * b0r[c] + x1 * b1r[c] + x2 * b2r[c] + x3 * b3r[c]
        for t in range(t4, K):
            x, brow = arow[t], bt[t, b0:b0 + nc]
            for c in range(nc):
                orow[c] += x * brow[c]


@njit(fastmath=FASTMATH, cache=True)
def _acc_ab_v4(out, o0, a, b, b0, nr, nc, K):
    # as _acc_ab_v3, four c at a time
    c4 = nc - nc % 4
    for r in range(nr):
        orow = out[o0 + r]
        for c in range(0, c4, 4):
            x0, x1, x2, x3 = a[r, c], a[r, c + 1], a[r, c + 2], a[r, c + 3]
            b0r, b1r, b2r, b3r = b[b0 + c], b[b0 + c + 1], b[b0 + c + 2], b[b0 + c + 3]
            for t in range(K):
                orow[t] += x0 * b0r[t] + x1 * b1r[t] + x2 * b2r[t] + x3 * b3r[t]
        for c in range(c4, nc):
            x, brow = a[r, c], b[b0 + c]
            for t in range(K):
                orow[t] += x * brow[t]


@njit(fastmath=FASTMATH, cache=True)
def _acc_atb_v4(out, a, b, b0, nr, nc, K):
    # as _acc_atb_v3, four r at a time
    r4 = nr - nr % 4
    for c in range(nc):
        orow = out[c]
        for r in range(0, r4, 4):
            x0, x1, x2, x3 = a[r, c], a[r + 1, c], a[r + 2, c], a[r + 3, c]
            b0r, b1r, b2r, b3r = b[b0 + r], b[b0 + r + 1], b[b0 + r + 2], b[b0 + r + 3]
            for t in range(K):
                orow[t] += x0 * b0r[t] + x1 * b1r[t] + x2 * b2r[t] + x3 * b3r[t]
        for r in range(r4, nr):
            x, brow = a[r, c], b[b0 + r]
            for t in range(K):
                orow[t] += x * brow[t]


# --------------------------------------------------------------------------- v3, v4: blocked
@njit(fastmath=FASTMATH, cache=True)
def _softmax_block(s, m, l, acc, a0, nq, nk, D, scale, diag):
    # s: (BQ, BK) raw q.k of this block, overwritten by p = exp(scale s - m_new), 0 where masked.
    # Row r may see columns c <= diag + r (diag = off + i0 - j0 if causal, else >= BK).
    # m, l: (BQ,) running max and sum; acc[a0 + r]: (D,) running l * o, rescaled when m grows.
    for r in range(nq):
        cend = min(nk, diag + r + 1)
        if cend <= 0:  # this row sees no key of this block (above the diagonal)
            for c in range(nk):
                s[r, c] = 0.0
            continue
        mx = m[r]
        for c in range(cend):
            mx = max(mx, s[r, c] * scale)
        alpha = fast_exp(m[r] - mx)
        tot = np.float32(0.0)  # float32 literal: stays float32, unifies to float64 for f64
        for c in range(cend):
            p = fast_exp(s[r, c] * scale - mx)
            s[r, c] = p
            tot += p
        for c in range(cend, nk):  # masked: above the diagonal
            s[r, c] = 0.0
        l[r] = l[r] * alpha + tot
        m[r] = mx
        for d in range(D):
            acc[a0 + r, d] *= alpha


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _forward_blocked(o, lse, q, k, v, scale, causal, unroll):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        qh, vh, oh = q[b, h], v[b, h], o[b, h]  # (Tq, D), (Tk, D), (Tq, D)
        kt = np.ascontiguousarray(k[b, h].T)  # (D, Tk): q k^T becomes rows of axpys
        s = np.empty((BQ, BK), dtype=q.dtype)  # scores, then probabilities, of one block
        m = np.empty(BQ, dtype=q.dtype)
        l = np.empty(BQ, dtype=q.dtype)
        for i0 in range(0, Tq, BQ):
            nq = min(BQ, Tq - i0)
            kend = min(Tk, off + i0 + nq) if causal else Tk  # blocks past the diagonal: skipped
            diag0 = off + i0 if causal else Tk
            _fill(m, NEG_BIG)
            _fill(l, 0.0)
            _fill(oh[i0:i0 + nq], 0.0)  # accumulates l * o, normalised at the end
            for j0 in range(0, kend, BK):
                nk = min(BK, kend - j0)
                if unroll:
                    _abt_v4(s, qh, i0, kt, j0, nq, nk, D)
                else:
                    _abt_v3(s, qh, i0, kt, j0, nq, nk, D)
                _softmax_block(s, m, l, oh, i0, nq, nk, D, scale, diag0 - j0)
                if unroll:
                    _acc_ab_v4(oh, i0, s, vh, j0, nq, nk, D)
                else:
                    _acc_ab_v3(oh, i0, s, vh, j0, nq, nk, D)
            for r in range(nq):
                inv = 1.0 / l[r]
                for d in range(D):
                    oh[i0 + r, d] *= inv
                lse[b, h, i0 + r] = m[r] + math.log(l[r])


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_blocked(dq, dk, dv, do, q, k, v, o, lse, scale, causal, unroll):
    # FlashAttention-2 order: key blocks outer (their dk, dv stay in a (BK, D) accumulator),
    # query blocks inner; dq rows are accumulated in place (one thread owns the whole head).
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        qh, kh, doh, dqh = q[b, h], k[b, h], do[b, h], dq[b, h]  # (T, D) each
        kt = np.ascontiguousarray(kh.T)  # (D, Tk)
        vt = np.ascontiguousarray(v[b, h].T)  # (D, Tk)
        delta = np.empty(Tq, dtype=q.dtype)  # rowsum(do * o) == rowsum(p * dp)
        for i in range(Tq):
            t = np.float32(0.0)
            for d in range(D):
                t += doh[i, d] * o[b, h, i, d]
            delta[i] = t
        p = np.empty((BQ, BK), dtype=q.dtype)
        ds = np.empty((BQ, BK), dtype=q.dtype)  # dp, then ds = p (dp - delta) scale
        dkacc = np.empty((BK, D), dtype=q.dtype)
        dvacc = np.empty((BK, D), dtype=q.dtype)
        _fill(dqh, 0.0)
        for j0 in range(0, Tk, BK):
            nk = min(BK, Tk - j0)
            _fill(dkacc, 0.0)
            _fill(dvacc, 0.0)
            istart = max(0, j0 - off) if causal else 0  # earlier queries see none of these keys
            for i0 in range(istart, Tq, BQ):
                nq = min(BQ, Tq - i0)
                if unroll:
                    _abt_v4(p, qh, i0, kt, j0, nq, nk, D)
                    _abt_v4(ds, doh, i0, vt, j0, nq, nk, D)
                else:
                    _abt_v3(p, qh, i0, kt, j0, nq, nk, D)
                    _abt_v3(ds, doh, i0, vt, j0, nq, nk, D)
                for r in range(nq):
                    cend = min(nk, off + i0 + r - j0 + 1) if causal else nk
                    cend = max(cend, 0)
                    lr, dr = lse[b, h, i0 + r], delta[i0 + r]
                    for c in range(cend):
                        pc = fast_exp(p[r, c] * scale - lr)
                        p[r, c] = pc
                        ds[r, c] = pc * (ds[r, c] - dr) * scale
                    for c in range(cend, nk):  # masked: above the diagonal
                        p[r, c] = 0.0
                        ds[r, c] = 0.0
                if unroll:
                    _acc_atb_v4(dvacc, p, doh, i0, nq, nk, D)  # dv += p^T do
                    _acc_ab_v4(dqh, i0, ds, kh, j0, nq, nk, D)  # dq += ds k
                    _acc_atb_v4(dkacc, ds, qh, i0, nq, nk, D)  # dk += ds^T q
                else:
                    _acc_atb_v3(dvacc, p, doh, i0, nq, nk, D)
                    _acc_ab_v3(dqh, i0, ds, kh, j0, nq, nk, D)
                    _acc_atb_v3(dkacc, ds, qh, i0, nq, nk, D)
            for c in range(nk):
                for d in range(D):
                    dk[b, h, j0 + c, d] = dkacc[c, d]
                    dv[b, h, j0 + c, d] = dvacc[c, d]


# v3 and v4 share the two compiled prange drivers above; the version only picks the block
# products. A flag tested once per block costs nothing at run time, and one compiled driver
# instead of two (or an @njit shim around it, which LLVM re-optimises whole) halves the
# first-call compile time.
def attention_forward_v3(o, lse, q, k, v, scale, causal):
    _forward_blocked(o, lse, q, k, v, scale, causal, False)


def attention_backward_v3(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    _backward_blocked(dq, dk, dv, do, q, k, v, o, lse, scale, causal, False)


def attention_forward_v4(o, lse, q, k, v, scale, causal):
    _forward_blocked(o, lse, q, k, v, scale, causal, True)


def attention_backward_v4(dq, dk, dv, do, q, k, v, o, lse, scale, causal):
    _backward_blocked(dq, dk, dv, do, q, k, v, o, lse, scale, causal, True)
