"""RMS normalisation over the channel axis (Zhang & Sennrich 2019), Numba CPU: Llama's norm.

y = x * rrms * w,  rrms = 1 / sqrt(mean_c(x^2) + eps).  x, y: (N, C)  w: (C,)  rrms: (N,) saved.
Backward, with xhat = x * rrms and g = dy * w:
  dx = rrms * (g - xhat * mean_c(g * xhat)),  dw = sum_n dy * xhat.
Layer norm without the mean: one reduction per row instead of two, no bias. dw is a reduction
over N: each thread sums its own block of rows into a float64 partial (no races, no atomics),
and the partials are added in thread order at the end (deterministic for a thread count).

Versions (not timed: the rungs repeat layernorm.py's steps, whose gains are measured there):

rms_norm_forward
  v1  plain loops, float64 sum of squares, one thread: the readable definition.
  v2  prange over rows, the sum in the input dtype (vector lanes keep float32 sums of a few
      hundred terms accurate to ~1e-7), 1/sqrt once per row.  (default)
rms_norm_backward
  v1  plain loops, one thread, dw accumulated row by row in float64.
  v2  prange over per-thread row blocks with float64 partial dw, one reduction at the end.
      (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference) and tests/kernels/test_cpu_llama_ops.py
(finite differences of the reference). Benchmark: ``python benchmarks/bench_kernels.py --op
rms_norm``.
"""

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ._fastmath import FASTMATH
from ._serial import pick, picks
from ._serial import threads as _threads

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")


# --------------------------------------------------------------------------- forward
@njit(**_JIT)
def rms_norm_forward_v1(out, rrms, x, w, eps):
    # x, out: (N, C)  w: (C,)  rrms: (N,)
    N, C = x.shape
    for n in range(N):
        q = 0.0
        for c in range(C):
            q += x[n, c] * x[n, c]
        r = 1.0 / np.sqrt(q / C + eps)
        rrms[n] = r
        for c in range(C):
            out[n, c] = x[n, c] * r * w[c]


@njit(parallel=True, **_JIT)
def rms_norm_forward_v2(out, rrms, x, w, eps):
    # x, out: (N, C)  w: (C,)  rrms: (N,)  eps in the dtype of x
    N, C = x.shape
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    inv_c = one / C
    for n in prange(N):
        q = zero
        for c in range(C):
            q += x[n, c] * x[n, c]
        r = one / np.sqrt(q * inv_c + eps)
        rrms[n] = r
        for c in range(C):
            out[n, c] = x[n, c] * r * w[c]


# --------------------------------------------------------------------------- backward
@njit(**_JIT)
def rms_norm_backward_v1(dx, dw, dy, x, w, rrms, nt):
    # dy, x, dx: (N, C)  w: (C,)  rrms: (N,)  dw: (C,) float64, overwritten
    # (nt, the thread count the parallel version splits N by, is unused here)
    N, C = x.shape
    dw[:] = 0.0
    for n in range(N):
        r = rrms[n]
        sgx = 0.0
        for c in range(C):
            xh = x[n, c] * r
            sgx += dy[n, c] * w[c] * xh
            dw[c] += dy[n, c] * xh
        sgx /= C
        for c in range(C):
            dx[n, c] = r * (dy[n, c] * w[c] - x[n, c] * r * sgx)


@njit(parallel=True, **_JIT)
def rms_norm_backward_v2(dx, dw, dy, x, w, rrms, nt):
    # dy, x, dx: (N, C)  w: (C,)  rrms: (N,)  dw: (C,) float64, overwritten
    # nt: thread count (numba.get_num_threads() inside a kernel would block caching)
    N, C = x.shape
    pdw = np.zeros((nt, C))  # per-thread float64 partial sums over that thread's rows
    zero, inv_c = x.dtype.type(0.0), x.dtype.type(1.0 / C)
    for t in prange(nt):
        for n in range(t * N // nt, (t + 1) * N // nt):
            r = rrms[n]
            sgx = zero
            for c in range(C):
                xh = x[n, c] * r
                sgx += dy[n, c] * w[c] * xh
                pdw[t, c] += dy[n, c] * xh
            sgx *= inv_c
            for c in range(C):
                dx[n, c] = r * (dy[n, c] * w[c] - x[n, c] * r * sgx)
    for c in range(C):
        a = 0.0
        for t in range(nt):
            a += pdw[t, c]
        dw[c] = a


# --------------------------------------------------------------------------- rungs
def _x(a, dtype=None):
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"rms_norm takes float32 or float64 arrays, not {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"rms_norm kernels take x of shape (N, C), got {a.shape}")
    return a


def _w(w, C, dt):
    w = np.ascontiguousarray(w, dtype=dt)
    if w.shape != (C,):
        raise ValueError(f"rms_norm: weight of shape {w.shape}, expected ({C},)")
    return w


def _forward(kernel):
    """rms_norm_forward(x, w, eps) -> (y, rrms), running ``kernel``."""
    def run(x, w, eps=1e-5):
        x = _x(x)
        N, C = x.shape
        dt = x.dtype
        out = np.empty_like(x)
        rrms = np.empty(N, dtype=dt)
        if x.size:
            pick(kernel, x.size)(out, rrms, x, _w(w, C, dt), dt.type(eps))
        return out, rrms
    return picks(run)


def _backward(kernel):
    """rms_norm_backward(dy, x, w, rrms) -> (dx, dw), running ``kernel``."""
    def run(dy, x, w, rrms):
        x = _x(x)
        N, C = x.shape
        dt = x.dtype
        dy = _x(dy, dt)
        if dy.shape != x.shape:
            raise ValueError(f"rms_norm_backward: dy shape {dy.shape} does not match x {x.shape}")
        dx = np.empty_like(x)
        dw = np.zeros(C)
        if x.size:
            k = pick(kernel, x.size)
            k(dx, dw, dy, x, _w(w, C, dt), np.ascontiguousarray(rrms, dtype=dt), _threads(k))
        return dx, dw.astype(dt)
    return picks(run)


FWD = dtype_fits(("float32", "float64"))  # x
BWD = dtype_fits(("float32", "float64"), arg=1)  # x (after dy)
LADDERS = (
    Ladder("rms_norm_forward", "cpu", default=2, about="RMSNorm over rows (N, C)", rungs=(
        Rung(1, _forward(rms_norm_forward_v1), "plain loops, float64 sum of squares, one thread",
             FWD),
        Rung(2, _forward(rms_norm_forward_v2), "prange over rows, sums in the input dtype", FWD),
    )),
    Ladder("rms_norm_backward", "cpu", default=2, about="dx per row, dw over rows", rungs=(
        Rung(1, _backward(rms_norm_backward_v1), "plain loops, one thread, dw row by row", BWD),
        Rung(2, _backward(rms_norm_backward_v2),
             "prange over row blocks, per-thread float64 partial dw", BWD),
    )),
)
