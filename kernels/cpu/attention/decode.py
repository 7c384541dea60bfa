"""Attention v8: a few query rows against a long key cache (decoding), keys split across threads.

Same contract and signatures as every version in this folder (output buffers first); the ladder
and the math are in ``__init__.py``.

Why: a decode step asks for one new query row per head (with grouped-query attention, the H / Hkv
query heads of a group as rows of one block) against every cached key. v7 packs k and v into
micro-kernel slivers per head, a copy as large as the cache, for a product of a few rows; and
with B * Hkv = 3 heads there are too few heads for one per thread. v8 reads k and v in place
(the cache's strided views, as flat memory: kernels/cpu/_views.py), once, and splits each
head's keys into chunks (Dao et al. 2023, "Flash-Decoding"): task (b, h, c) computes, for each
query row, the chunk's running maximum m, sum l = sum exp(s - m) and o = sum exp(s - m) v; a
second pass merges the chunks:
M = max_c m_c,  L = sum_c exp(m_c - M) l_c,  o = sum_c exp(m_c - M) o_c / L,  lse = M + log L.
Memory per task: one (Tq, chunk) score tile. With ``causal``, row i sees keys 0..off + i.

``attention_ragged_forward_v8`` is the same kernel for a batch whose rows have different
lengths (a server's ragged KV cache): batch row b sees its first lengths[b] keys, and chunks
past them are skipped, where the masked composite computed every score and threw most away.
"""

import math

import numpy as np
from numba import njit, prange

from .._fastmath import FASTMATH, fast_exp, fast_max
from .._serial import pick
from .._views import flat

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy", nogil=True)
CHUNK = 128  # keys per task: a (Tq, 128) score tile and 128 rows of k and v (32 KiB at D 64)
NEG_BIG = -1e30  # a finite "minus infinity": exp(NEG_BIG - m) is 0 without inf - inf


@njit(**_JIT)
def _chunk(o, m, l, s, q, kf, k0, ks, vf, v0, vs, t0, t1, scale, causal, off):
    # o: (Tq, D) partial outputs, m, l: (Tq,) of keys t0..t1-1; s: (Tq, CHUNK) scratch; key
    # row t of this head is kf[k0 + t ks : k0 + t ks + D] (likewise v), taken as a slice: its
    # indices are then known non-negative, so there are no wrap-around checks and the loops
    # over D vectorise (8x faster than indexing kf[r + d]), as do the exponentials (fast_exp).
    Tq, D = q.shape
    zero = q.dtype.type(0.0)
    for i in range(Tq):
        n = min(t1, off + i + 1) if causal else t1  # keys t0..n-1 visible to row i
        si = s[i]
        qi = q[i]
        t = t0
        while t + 4 <= n:  # four keys at once: four independent sums in flight, not one chain
            r = k0 + t * ks
            ka, kb = kf[r:r + D], kf[r + ks:r + ks + D]
            kc, kd = kf[r + 2 * ks:r + 2 * ks + D], kf[r + 3 * ks:r + 3 * ks + D]
            a0 = a1 = a2 = a3 = zero
            for d in range(D):
                a0 += qi[d] * ka[d]
                a1 += qi[d] * kb[d]
                a2 += qi[d] * kc[d]
                a3 += qi[d] * kd[d]
            si[t - t0], si[t - t0 + 1] = a0 * scale, a1 * scale
            si[t - t0 + 2], si[t - t0 + 3] = a2 * scale, a3 * scale
            t += 4
        for t in range(t, n):
            kr = kf[k0 + t * ks:k0 + t * ks + D]
            acc = zero
            for d in range(D):
                acc += qi[d] * kr[d]
            si[t - t0] = acc * scale
        mi = q.dtype.type(NEG_BIG)
        for j in range(n - t0):
            mi = fast_max(mi, si[j])
        li = zero
        for j in range(n - t0):
            p = fast_exp(si[j] - mi)
            si[j] = p
            li += p
        oi = o[i]
        for d in range(D):
            oi[d] = zero
        t = t0
        while t + 4 <= n:  # o += p v for four keys per pass over o
            r = v0 + t * vs
            va, vb = vf[r:r + D], vf[r + vs:r + vs + D]
            vc, vd = vf[r + 2 * vs:r + 2 * vs + D], vf[r + 3 * vs:r + 3 * vs + D]
            pa, pb, pc, pd = si[t - t0], si[t - t0 + 1], si[t - t0 + 2], si[t - t0 + 3]
            for d in range(D):
                oi[d] += (pa * va[d] + pb * vb[d]) + (pc * vc[d] + pd * vd[d])
            t += 4
        for t in range(t, n):
            vr = vf[v0 + t * vs:v0 + t * vs + D]
            p = si[t - t0]
            for d in range(D):
                oi[d] += p * vr[d]
        m[i] = mi
        l[i] = li


@njit(**_JIT)
def _rows(a):
    # (flat memory, offset of head (b, h) = b s0 + h s1, row stride s2), in elements, of a
    # (B, H, T, D) array whose rows of D are contiguous (strides checked by the caller)
    isz = a.itemsize
    s0, s1, s2 = a.strides[0] // isz, a.strides[1] // isz, a.strides[2] // isz
    B, H, T, D = a.shape
    span = (B - 1) * s0 + (H - 1) * s1 + (T - 1) * s2 + D if a.size else 0
    return flat(a, span), s0, s1, s2


@njit(parallel=True, **_JIT)
def _forward(o, lse, q, k, v, scale, causal, klen):
    # q: (B, H, Tq, D) contiguous; k, v: (B, H, Tk, D) with contiguous rows (a cache's view);
    # batch row b reads its first klen[b] keys (Tk for all but in a ragged batch)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    kf, k0, k1, k2 = _rows(k)
    vf, v0, v1, v2 = _rows(v)
    nc = max(1, (Tk + CHUNK - 1) // CHUNK)
    if nc == 1:  # one chunk per head: its result is final, no partials and no merge pass
        for task in prange(B * H):
            b, h = task // H, task % H
            s = np.empty((Tq, CHUNK), dtype=q.dtype)
            m = np.empty(Tq, dtype=q.dtype)
            _chunk(o[b, h], m, lse[b, h], s, q[b, h], kf, b * k0 + h * k1, k2, vf,
                   b * v0 + h * v1, v2, 0, klen[b], scale, causal, klen[b] - Tq)
            for i in range(Tq):  # lse[b, h] holds each row's sum l until here
                inv = 1.0 / lse[b, h, i]
                for d in range(D):
                    o[b, h, i, d] *= inv
                lse[b, h, i] = m[i] + math.log(lse[b, h, i])
        return
    po = np.empty((B, H, nc, Tq, D), dtype=q.dtype)  # per-chunk partial outputs
    pm = np.empty((B, H, nc, Tq), dtype=q.dtype)
    pl = np.empty((B, H, nc, Tq), dtype=q.dtype)
    for task in prange(B * H * nc):
        b, rest = task // (H * nc), task % (H * nc)
        h, c = rest // nc, rest % nc
        s = np.empty((Tq, CHUNK), dtype=q.dtype)
        # a chunk wholly past the row's keys computes nothing (l = 0: the merge skips it)
        _chunk(po[b, h, c], pm[b, h, c], pl[b, h, c], s, q[b, h], kf, b * k0 + h * k1, k2, vf,
               b * v0 + h * v1, v2, c * CHUNK, min(klen[b], (c + 1) * CHUNK), scale, causal,
               klen[b] - Tq)
    for task in prange(B * H * Tq):  # merge the chunks of each query row
        b, rest = task // (H * Tq), task % (H * Tq)
        h, i = rest // Tq, rest % Tq
        mx = q.dtype.type(NEG_BIG)
        for c in range(nc):
            mx = max(mx, pm[b, h, c, i])
        total = q.dtype.type(0.0)
        oi = o[b, h, i]
        for d in range(D):
            oi[d] = 0.0
        for c in range(nc):
            if pl[b, h, c, i] > 0:  # a chunk wholly past row i's causal limit adds nothing
                w = fast_exp(pm[b, h, c, i] - mx)
                total += w * pl[b, h, c, i]
                for d in range(D):
                    oi[d] += w * po[b, h, c, i, d]
        inv = 1.0 / total
        for d in range(D):
            oi[d] *= inv
        lse[b, h, i] = mx + math.log(total)


def _rows_contiguous(a):
    """a itself when its rows of D are contiguous and no stride is negative, else a copy."""
    if a.strides[3] == a.itemsize and min(a.strides) >= 0 and \
            not any(st % a.itemsize for st in a.strides):
        return a
    return np.ascontiguousarray(a)


def attention_forward_v8(o, lse, q, k, v, scale, causal):
    # parallel once the keys read (B H Tk D elements) pay for a second thread
    kernel = pick(_forward, k.shape[0] * k.shape[1] * k.shape[2] * k.shape[3])
    kernel(o, lse, np.ascontiguousarray(q), _rows_contiguous(k), _rows_contiguous(v), scale,
           causal, np.full(k.shape[0], k.shape[2], dtype=np.int64))


def attention_ragged_forward_v8(o, lse, q, k, v, lengths, scale):
    klen = np.asarray(lengths, dtype=np.int64)
    kernel = pick(_forward, int(klen.sum()) * k.shape[1] * k.shape[3])
    kernel(o, lse, np.ascontiguousarray(q), _rows_contiguous(k), _rows_contiguous(v), scale,
           False, klen)
