"""Fused softmax + cross-entropy over a vocabulary (Numba CPU), forward and backward.

loss = mean over non-ignored rows n of (lse_n - logits[n, t_n])
lse_n = log sum_v exp(logits[n, v])
dlogits[n, v] = dloss / count * (softmax(logits)[n, v] - [v == t_n]),  0 on ignored rows.
logits: (N, V)  targets: (N,) int  lse: (N,) saved by the forward so that the backward rebuilds
the probabilities with one exp per element and never stores the (N, V) softmax.

The kernels write per-row losses (float64, 0 on ignored rows) and lse; the rung sums the
N losses and divides by the count (a 2048-element sum, not worth a parallel reduction).

Versions (speed-up vs kernels.reference, float32, 2 threads; N = 2048 with V = 65 (char
vocabulary) / V = 2048 (sentencepiece), and the tiny config N=768, V=65):

cross_entropy_forward
  v1  plain loops, two passes per row (max, then exp-sum) with math.exp, one thread:
      0.50x / 0.81x.
  v2  prange over rows + fast_exp + fast_max (both passes vectorise), dtype accumulators:
      3.8x / 7.8x, tiny 2.4x (1 thread).  (default)
  v3  one pass per row with an online max: the row is read in chunks of 64, each chunk's max
      found first, the running sum rescaled by exp(m_old - m_new) only when the max grows,
      then the chunk's exps added: 1.6x / 2.8x, tiny 1.1x. Slower than v2: a row (<= 8 KiB)
      is in L1 after the max pass, so the second pass is nearly free, while v3 pays two
      horizontal vector reductions per chunk. It stays as the lesson.
cross_entropy_backward
  v1  plain loops, math.exp, one thread: 0.47x / 0.79x.
  v2  prange over rows + fast_exp, 1/count folded into one scale: 2.5x / 7.0x, tiny 2.1x.
      (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference) and
tests/kernels/test_cpu_crossentropy.py (ignore_index, bad targets). Benchmark:
``python benchmarks/bench_kernels.py --op cross_entropy``; measurement conditions:
benchmarks/README.md.
"""

import math

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ._fastmath import FASTMATH, fast_exp, fast_max
from ._serial import pick, picks

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")
_CHUNK = 64  # v3: elements per online-max step (4 AVX-512 / 8 AVX2 float32 vectors)


# --------------------------------------------------------------------------- forward
@njit(**_JIT)
def cross_entropy_forward_v1(losses, lse, logits, targets, ignore_index):
    # logits: (N, V)  targets: (N,)  losses: (N,) float64  lse: (N,)
    N, V = logits.shape
    for n in range(N):
        m = logits[n, 0]
        for v in range(1, V):
            m = max(m, logits[n, v])
        s = 0.0
        for v in range(V):
            s += math.exp(logits[n, v] - m)
        l = m + math.log(s)
        lse[n] = l
        t = targets[n]
        losses[n] = 0.0 if t == ignore_index else l - logits[n, t]


@njit(parallel=True, **_JIT)
def cross_entropy_forward_v2(losses, lse, logits, targets, ignore_index):
    # logits: (N, V)  targets: (N,)  losses: (N,) float64  lse: (N,)
    N, V = logits.shape
    for n in prange(N):
        m = logits[n, 0]
        for v in range(1, V):
            m = fast_max(m, logits[n, v])
        s = logits.dtype.type(0.0)
        for v in range(V):
            s += fast_exp(logits[n, v] - m)
        l = m + np.log(s)
        lse[n] = l
        t = targets[n]
        losses[n] = 0.0 if t == ignore_index else l - logits[n, t]


@njit(parallel=True, **_JIT)
def cross_entropy_forward_v3(losses, lse, logits, targets, ignore_index):
    # logits: (N, V)  targets: (N,)  losses: (N,) float64  lse: (N,)
    N, V = logits.shape
    zero = logits.dtype.type(0.0)
    for n in prange(N):
        m = logits[n, 0]
        s = zero  # sum of exp(logits[n, :v0] - m) over the chunks seen so far
        for v0 in range(0, V, _CHUNK):
            v1 = min(v0 + _CHUNK, V)
            cm = logits[n, v0]
            for v in range(v0 + 1, v1):
                cm = fast_max(cm, logits[n, v])
            if cm > m:  # rare after the first chunks: rescale the running sum once
                s *= fast_exp(m - cm)
                m = cm
            for v in range(v0, v1):
                s += fast_exp(logits[n, v] - m)
        l = m + np.log(s)
        lse[n] = l
        t = targets[n]
        losses[n] = 0.0 if t == ignore_index else l - logits[n, t]


# --------------------------------------------------------------------------- backward
@njit(**_JIT)
def cross_entropy_backward_v1(dlogits, logits, lse, targets, scale, ignore_index):
    # logits, dlogits: (N, V)  lse, targets: (N,)  scale = dloss / count
    N, V = logits.shape
    for n in range(N):
        t = targets[n]
        if t == ignore_index:
            for v in range(V):
                dlogits[n, v] = 0.0
            continue
        for v in range(V):
            dlogits[n, v] = scale * math.exp(logits[n, v] - lse[n])
        dlogits[n, t] -= scale


@njit(parallel=True, **_JIT)
def cross_entropy_backward_v2(dlogits, logits, lse, targets, scale, ignore_index):
    # logits, dlogits: (N, V)  lse, targets: (N,)  scale = dloss / count, in the logits dtype
    N, V = logits.shape
    zero = logits.dtype.type(0.0)
    for n in prange(N):
        t = targets[n]
        if t == ignore_index:
            for v in range(V):
                dlogits[n, v] = zero
        else:
            l = lse[n]
            for v in range(V):
                dlogits[n, v] = scale * fast_exp(logits[n, v] - l)
            dlogits[n, t] -= scale


# --------------------------------------------------------------------------- rungs
def _logits(a):
    a = np.ascontiguousarray(a)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"cross-entropy takes float32 or float64 logits, not {a.dtype}")
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"cross-entropy takes logits of shape (N, V) with V > 0, got {a.shape}")
    return a


def _targets(targets, N, V, ignore_index):
    t = np.ascontiguousarray(targets, dtype=np.int64).reshape(-1)
    if t.shape[0] != N:
        raise ValueError(f"cross-entropy: {t.shape[0]} targets for {N} rows of logits")
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= V))
    if bad.any():
        raise IndexError(f"cross-entropy: target {t[bad][0]} is outside [0, {V})")
    return t, int(valid.sum())


def _forward(kernel):
    """cross_entropy_forward(logits, targets, ignore_index) -> (loss, lse), running ``kernel``."""
    def run(logits, targets, ignore_index=-100):
        logits = _logits(logits)
        N, V = logits.shape
        t, count = _targets(targets, N, V, ignore_index)
        losses = np.empty(N, dtype=np.float64)
        lse = np.empty(N, dtype=logits.dtype)
        if N:
            pick(kernel, logits.size)(losses, lse, logits, t, ignore_index)
        loss = losses.sum() / max(count, 1)
        return np.asarray(loss, dtype=logits.dtype), lse
    return picks(run)


def _backward(kernel):
    """cross_entropy_backward(dloss, logits, lse, targets, ignore_index) -> dlogits."""
    def run(dloss, logits, lse, targets, ignore_index=-100):
        logits = _logits(logits)
        N, V = logits.shape
        t, count = _targets(targets, N, V, ignore_index)
        lse = np.ascontiguousarray(lse, dtype=logits.dtype)
        scale = logits.dtype.type(float(dloss) / max(count, 1))
        dlogits = np.empty_like(logits)
        if N:
            pick(kernel, logits.size)(dlogits, logits, lse, t, scale, ignore_index)
        return dlogits
    return picks(run)


FLOAT = dtype_fits(("float32", "float64"))
FLOAT_LOGITS = dtype_fits(("float32", "float64"), arg=1)
LADDERS = (
    Ladder("cross_entropy_forward", "cpu", default=2, about="row log-sum-exp, picked logit",
           rungs=(
        Rung(1, _forward(cross_entropy_forward_v1), "plain loops, two passes, one thread", FLOAT),
        Rung(2, _forward(cross_entropy_forward_v2), "prange + fast_exp + fast_max", FLOAT),
        Rung(3, _forward(cross_entropy_forward_v3), "one pass, online max over chunks of 64 "
             "(slower than v2: the row is in L1 anyway)", FLOAT),
    )),
    Ladder("cross_entropy_backward", "cpu", default=2, about="softmax - onehot, scaled",
           rungs=(
        Rung(1, _backward(cross_entropy_backward_v1), "plain loops, math.exp, one thread",
             FLOAT_LOGITS),
        Rung(2, _backward(cross_entropy_backward_v2), "prange + fast_exp, one scale",
             FLOAT_LOGITS),
    )),
)
