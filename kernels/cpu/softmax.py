"""Softmax and log-softmax over the last axis (Numba CPU), forward and backward.

y = exp(x - max) / sum(exp(x - max));  log-softmax y = x - logsumexp(x).  Backward:
softmax dx = y * (dy - sum(dy * y));  log-softmax dx = dy - exp(y) * sum(dy).
Kernels see x as (N, V): N rows (B*T, or B*H*T for attention scores), V entries per row; the
rungs reshape any rank to that and back. Each row is at most a few KiB, so it stays in L1
between the passes over it (max, exp-sum, scale): the passes cost arithmetic, not memory.

Versions (speed-up vs kernels.reference, float32, 2 threads; N=2048 with V = 65 (char
vocabulary) / V = 2048 (sentencepiece), and the tiny config N=768, V=65):

softmax_forward
  v1  plain loops, math.exp, one thread. math.exp is a scalar libm call here (no SVML), so
      nothing vectorises: 0.46x / 1.17x (NumPy's own exp is SIMD).
  v2  prange over rows: both cores, still scalar exp: 0.74x / 0.58x.
  v3  fast_exp (polynomial, _fastmath.py) so the exp loop vectorises, fast_max (LLVM maxnum)
      so the row max does too (numba's max() compiles to a branch: the max pass alone took
      longer than the exps), scalars kept in the input dtype (a float64 literal would widen
      every float32 op), one reciprocal per row: 4.6x / 11.1x, tiny 3.7x.  (default)
softmax_backward
  v1  plain loops, one thread (no exp, so it vectorises): 2.5x / 2.8x.
  v2  prange over rows, dtype accumulators: 7.7x / 8.3x (1 thread), tiny 5.1x.  (default)
log_softmax_forward
  v1  plain loops, math.exp, one thread: 0.48x / 0.67x.
  v2  prange + fast_exp + fast_max: 3.2x (1 thread) / 2.7x, tiny 4.0x.  (default)
log_softmax_backward
  v1  plain loops, math.exp, one thread: 0.44x / 0.67x.
  v2  prange + fast_exp: 4.3x / 4.9x, tiny 3.4x.  (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference) and tests/kernels/test_cpu_softmax.py
(any rank, -inf, _fastmath). Benchmark: ``python benchmarks/bench_kernels.py --op softmax``;
how the numbers above were measured: benchmarks/README.md.
"""

import math

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ._fastmath import FASTMATH, fast_exp, fast_max
from ._serial import pick, picks

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")


# --------------------------------------------------------------------------- softmax forward
@njit(**_JIT)
def softmax_forward_v1(out, x):
    # x, out: (N, V)
    N, V = x.shape
    for n in range(N):
        m = x[n, 0]
        for v in range(1, V):
            m = max(m, x[n, v])
        s = 0.0
        for v in range(V):
            e = math.exp(x[n, v] - m)
            out[n, v] = e
            s += e
        for v in range(V):
            out[n, v] /= s


@njit(parallel=True, **_JIT)
def softmax_forward_v2(out, x):
    # x, out: (N, V); rows are independent, one thread takes a block of them
    N, V = x.shape
    for n in prange(N):
        m = x[n, 0]
        for v in range(1, V):
            m = max(m, x[n, v])
        s = 0.0
        for v in range(V):
            e = math.exp(x[n, v] - m)
            out[n, v] = e
            s += e
        for v in range(V):
            out[n, v] /= s


@njit(parallel=True, **_JIT)
def softmax_forward_v3(out, x):
    # x, out: (N, V)
    N, V = x.shape
    one = x.dtype.type(1.0)
    for n in prange(N):
        m = x[n, 0]
        for v in range(1, V):
            m = fast_max(m, x[n, v])
        s = x.dtype.type(0.0)
        for v in range(V):
            e = fast_exp(x[n, v] - m)
            out[n, v] = e
            s += e
        r = one / s
        for v in range(V):
            out[n, v] *= r


# --------------------------------------------------------------------------- softmax backward
@njit(**_JIT)
def softmax_backward_v1(dx, dy, y):
    # dy, y, dx: (N, V)
    N, V = y.shape
    for n in range(N):
        d = 0.0
        for v in range(V):
            d += dy[n, v] * y[n, v]
        for v in range(V):
            dx[n, v] = y[n, v] * (dy[n, v] - d)


@njit(parallel=True, **_JIT)
def softmax_backward_v2(dx, dy, y):
    # dy, y, dx: (N, V)
    N, V = y.shape
    for n in prange(N):
        d = y.dtype.type(0.0)
        for v in range(V):
            d += dy[n, v] * y[n, v]
        for v in range(V):
            dx[n, v] = y[n, v] * (dy[n, v] - d)


# --------------------------------------------------------------------------- log-softmax forward
@njit(**_JIT)
def log_softmax_forward_v1(out, x):
    # x, out: (N, V)
    N, V = x.shape
    for n in range(N):
        m = x[n, 0]
        for v in range(1, V):
            m = max(m, x[n, v])
        s = 0.0
        for v in range(V):
            s += math.exp(x[n, v] - m)
        lse = m + math.log(s)
        for v in range(V):
            out[n, v] = x[n, v] - lse


@njit(parallel=True, **_JIT)
def log_softmax_forward_v2(out, x):
    # x, out: (N, V)
    N, V = x.shape
    for n in prange(N):
        m = x[n, 0]
        for v in range(1, V):
            m = fast_max(m, x[n, v])
        s = x.dtype.type(0.0)
        for v in range(V):
            s += fast_exp(x[n, v] - m)
        lse = m + np.log(s)  # one scalar log per row
        for v in range(V):
            out[n, v] = x[n, v] - lse


# --------------------------------------------------------------------------- log-softmax backward
@njit(**_JIT)
def log_softmax_backward_v1(dx, dy, y):
    # dy, y, dx: (N, V); exp(y) is softmax(x)
    N, V = y.shape
    for n in range(N):
        s = 0.0
        for v in range(V):
            s += dy[n, v]
        for v in range(V):
            dx[n, v] = dy[n, v] - math.exp(y[n, v]) * s


@njit(parallel=True, **_JIT)
def log_softmax_backward_v2(dx, dy, y):
    # dy, y, dx: (N, V)
    N, V = y.shape
    for n in prange(N):
        s = y.dtype.type(0.0)
        for v in range(V):
            s += dy[n, v]
        for v in range(V):
            dx[n, v] = dy[n, v] - fast_exp(y[n, v]) * s


# --------------------------------------------------------------------------- rungs
def _rows(a, dtype=None):
    """(..., V) -> contiguous float (N, V) view plus the original shape."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"softmax kernels take float32 or float64 arrays, not {a.dtype}")
    V = a.shape[-1] if a.ndim else 1
    return a.reshape(-1, V), a.shape


def _unary(kernel):
    """forward(x) -> y with the reference's signature, running ``kernel(out, x)``."""
    def run(x):
        x2, shape = _rows(x)
        out = np.empty_like(x2)
        if x2.size:
            pick(kernel, x2.size)(out, x2)
        return out.reshape(shape)
    return picks(run)


def _binary(kernel):
    """backward(dy, y) -> dx with the reference's signature, running ``kernel(dx, dy, y)``."""
    def run(dy, y):
        y2, shape = _rows(y)
        dy2, _ = _rows(dy, y2.dtype)
        if dy2.shape != y2.shape:
            raise ValueError(f"dy shape {np.shape(dy)} does not match y shape {np.shape(y)}")
        dx = np.empty_like(y2)
        if y2.size:
            pick(kernel, y2.size)(dx, dy2, y2)
        return dx.reshape(shape)
    return picks(run)


FLOAT = dtype_fits(("float32", "float64"))
LADDERS = (
    Ladder("softmax_forward", "cpu", default=3, about="row max, exp-sum, scale", rungs=(
        Rung(1, _unary(softmax_forward_v1), "plain loops, math.exp, one thread", FLOAT),
        Rung(2, _unary(softmax_forward_v2), "prange over rows", FLOAT),
        Rung(3, _unary(softmax_forward_v3), "fast_exp + fast_max vectorise, dtype scalars", FLOAT),
    )),
    Ladder("softmax_backward", "cpu", default=2, rungs=(
        Rung(1, _binary(softmax_backward_v1), "plain loops, one thread", FLOAT),
        Rung(2, _binary(softmax_backward_v2), "prange over rows, dtype accumulators", FLOAT),
    )),
    Ladder("log_softmax_forward", "cpu", default=2, rungs=(
        Rung(1, _unary(log_softmax_forward_v1), "plain loops, math.exp, one thread", FLOAT),
        Rung(2, _unary(log_softmax_forward_v2), "prange + fast_exp + fast_max", FLOAT),
    )),
    Ladder("log_softmax_backward", "cpu", default=2, rungs=(
        Rung(1, _binary(log_softmax_backward_v1), "plain loops, math.exp, one thread", FLOAT),
        Rung(2, _binary(log_softmax_backward_v2), "prange + fast_exp", FLOAT),
    )),
)
