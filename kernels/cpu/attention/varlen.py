"""Attention v1 of ``attention_varlen_forward``: short sequences packed end to end in one row,
each causal over its own keys (and a prefix they share), in one call.

Same contract as kernels/reference.py ``attention_varlen_forward``: q (H, N, D), k, v (Hkv, N,
D), sequence j at positions starts[j]..ends[j]-1 seeing keys 0..prefix[j]-1 and its own up to
each query. Why: a server prefills the prompts that arrive together as one packed row
(``Llama.prefill_packed``). Before this kernel each layer copied them into a right-padded
batch, repeated the key/value heads for the query heads and copied the outputs back, about
sixty NumPy calls for eight prompts of eight tokens, where the arithmetic is a few
microseconds: 7.9 ms of an 89 ms prefill of SmolLM2, 5.3 now (cache writes included; the
numbers in benchmarks/README.md). Here one task per (sequence, query head) reads q,
k and v in place, its group's key/value head by index. Plain loops, one query row at a time:
for the short sequences it is meant for (``minillm.nn.llama`` sends it sequences of at most
``VARLEN_ROWS`` positions) the work per row is a few hundred multiply-adds, and a long
sequence goes to the blocked kernels instead.
"""

import math

import numpy as np
from numba import njit, prange

from .._fastmath import FASTMATH, fast_exp
from .._serial import pick

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy", nogil=True)
NEG_BIG = -1e30


@njit(**_JIT)
def _row(oi, qi, kg, vg, s, p, s0, i, scale):
    # query row qi against keys 0..p-1 and s0..i of one key/value head (kg, vg: (N, D));
    # oi (D,) <- softmax-weighted values; returns (max score, sum of exponentials)
    D = qi.shape[0]
    n = p + i - s0 + 1
    mx = qi.dtype.type(NEG_BIG)
    for t in range(n):
        kr = kg[t] if t < p else kg[s0 + t - p]
        acc = qi.dtype.type(0.0)
        for d in range(D):
            acc += qi[d] * kr[d]
        acc *= scale
        s[t] = acc
        mx = max(mx, acc)
    total = qi.dtype.type(0.0)
    for t in range(n):
        e = fast_exp(s[t] - mx)
        s[t] = e
        total += e
    for d in range(D):
        oi[d] = 0.0
    for t in range(n):
        vr = vg[t] if t < p else vg[s0 + t - p]
        w = s[t]
        for d in range(D):
            oi[d] += w * vr[d]
    inv = 1.0 / total
    for d in range(D):
        oi[d] *= inv
    return mx, total


@njit(parallel=True, **_JIT)
def _varlen(o, lse, q, k, v, starts, ends, prefix, scale):
    # o, q: (H, N, D); lse: (H, N); k, v: (Hkv, N, D); one task per (sequence, query head)
    H = q.shape[0]
    rep = H // k.shape[0]
    S = starts.shape[0]
    for task in prange(S * H):
        j, h = task // H, task % H
        s0, s1, p = starts[j], ends[j], prefix[j]
        g = h // rep
        s = np.empty(p + s1 - s0, dtype=q.dtype)  # one row's scores
        for i in range(s0, s1):
            mx, total = _row(o[h, i], q[h, i], k[g], v[g], s, p, s0, i, scale)
            lse[h, i] = mx + math.log(total)


def attention_varlen_forward_v1(o, lse, q, k, v, starts, ends, prefix, scale):
    # parallel once the scores computed (query-key pairs times D) pay for a second thread
    lens = ends - starts
    work = int((lens * (prefix + (lens + 1) / 2)).sum()) * q.shape[0] * q.shape[2]
    pick(_varlen, work)(o, lse, q, k, v, starts, ends, prefix, scale)
