"""Layer normalisation over the channel axis (Ba, Kiros & Hinton 2016), Numba CPU.

y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps).  x, y: (N, C)  w, b: (C,)
Backward, with xhat = (x - mean) * rstd and g = dy * w:
  dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  dw = sum_n dy * xhat,  db = sum_n dy.
mean, rstd: (N,) are saved by the forward. A row (C = 384 floats, 1.5 KiB) stays in L1, so the
second pass over it costs arithmetic only. dw and db are reductions over N: each thread sums its
own block of rows into a float64 partial (no races, no atomics), and the partials are added at
the end. The rungs pass w = 1, b = 0 when they are None (a C-vector, so nothing to gain from a
separate compiled variant).

Versions (speed-up vs kernels.reference, float32; small N=2048 C=384 / tiny N=768 C=128):

layernorm_forward
  v1  plain loops, two passes (mean, then variance), float64 sums, one thread: 4.8x / 3.4x.
  v2  prange over rows, sums in the input dtype (vector lanes keep float32 sums of 384 terms
      accurate to ~1e-7), 1/sqrt once per row: 8.1x / 4.8x.
  v3  one pass for both moments with a shift (sums of x - x[0] and of its square, so there
      is no cancellation when |mean| >> std): 11.6x / 6.3x.  (default)
layernorm_backward
  v1  plain loops, one thread, dw/db accumulated row by row: 7.5x / 4.6x.
  v2  prange over per-thread row blocks with float64 partial dw/db, one reduction at the end:
      8.7x / 4.6x on 2 threads, 10.5x / 7.2x on 1 thread.  (default)
      Splitting the row loop in three as bias_gelu_backward_v3 does gains nothing here
      (0.51 vs 0.43 ms on 1 thread): at C = 384 the fused loop already runs well.

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference) and tests/kernels/test_cpu_layernorm.py
(w/b absent, finite differences of the reference). Benchmark:
``python benchmarks/bench_kernels.py --op layernorm``; measurement conditions:
benchmarks/README.md.
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
def layernorm_forward_v1(out, mean, rstd, x, w, b, eps):
    # x, out: (N, C)  w, b: (C,)  mean, rstd: (N,)
    N, C = x.shape
    for n in range(N):
        s = 0.0
        for c in range(C):
            s += x[n, c]
        mu = s / C
        q = 0.0
        for c in range(C):
            d = x[n, c] - mu
            q += d * d
        r = 1.0 / np.sqrt(q / C + eps)
        mean[n] = mu
        rstd[n] = r
        for c in range(C):
            out[n, c] = (x[n, c] - mu) * r * w[c] + b[c]


@njit(parallel=True, **_JIT)
def layernorm_forward_v2(out, mean, rstd, x, w, b, eps):
    # x, out: (N, C)  w, b: (C,)  mean, rstd: (N,)  eps in the dtype of x
    N, C = x.shape
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    inv_c = one / C
    for n in prange(N):
        s = zero
        for c in range(C):
            s += x[n, c]
        mu = s * inv_c
        q = zero
        for c in range(C):
            d = x[n, c] - mu
            q += d * d
        r = one / np.sqrt(q * inv_c + eps)
        mean[n] = mu
        rstd[n] = r
        for c in range(C):
            out[n, c] = (x[n, c] - mu) * r * w[c] + b[c]


@njit(parallel=True, **_JIT)
def layernorm_forward_v3(out, mean, rstd, x, w, b, eps):
    # x, out: (N, C)  w, b: (C,)  mean, rstd: (N,)  eps in the dtype of x
    N, C = x.shape
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    inv_c = one / C
    for n in prange(N):
        k = x[n, 0]  # shift: var(x) = E[(x-k)^2] - E[x-k]^2 is well conditioned for k ~ mean
        s = zero
        q = zero
        for c in range(C):
            d = x[n, c] - k
            s += d
            q += d * d
        ds = s * inv_c
        mu = k + ds
        r = one / np.sqrt(max(q * inv_c - ds * ds, zero) + eps)
        mean[n] = mu
        rstd[n] = r
        for c in range(C):
            out[n, c] = (x[n, c] - mu) * r * w[c] + b[c]


# --------------------------------------------------------------------------- backward
@njit(**_JIT)
def layernorm_backward_v1(dx, dw, db, dy, x, w, mean, rstd, nt):
    # dy, x, dx: (N, C)  w: (C,)  mean, rstd: (N,)  dw, db: (C,) float64, overwritten
    # (nt, the thread count the parallel versions split N by, is unused here)
    N, C = x.shape
    dw[:] = 0.0
    db[:] = 0.0
    for n in range(N):
        mu, r = mean[n], rstd[n]
        sg = 0.0
        sgx = 0.0
        for c in range(C):
            xh = (x[n, c] - mu) * r
            g = dy[n, c] * w[c]
            sg += g
            sgx += g * xh
            dw[c] += dy[n, c] * xh
            db[c] += dy[n, c]
        sg /= C
        sgx /= C
        for c in range(C):
            xh = (x[n, c] - mu) * r
            dx[n, c] = r * (dy[n, c] * w[c] - sg - xh * sgx)


@njit(parallel=True, **_JIT)
def layernorm_backward_v2(dx, dw, db, dy, x, w, mean, rstd, nt):
    # dy, x, dx: (N, C)  w: (C,)  mean, rstd: (N,)  dw, db: (C,) float64, overwritten
    # nt: thread count (numba.get_num_threads() inside a kernel would block caching)
    N, C = x.shape
    pdw = np.zeros((nt, C))  # per-thread float64 partial sums over that thread's rows
    pdb = np.zeros((nt, C))
    zero, inv_c = x.dtype.type(0.0), x.dtype.type(1.0 / C)
    for t in prange(nt):
        for n in range(t * N // nt, (t + 1) * N // nt):
            mu, r = mean[n], rstd[n]
            sg = zero
            sgx = zero
            for c in range(C):
                xh = (x[n, c] - mu) * r
                g = dy[n, c] * w[c]
                sg += g
                sgx += g * xh
                pdw[t, c] += dy[n, c] * xh
                pdb[t, c] += dy[n, c]
            sg *= inv_c
            sgx *= inv_c
            for c in range(C):
                xh = (x[n, c] - mu) * r
                dx[n, c] = r * (dy[n, c] * w[c] - sg - xh * sgx)
    for c in range(C):
        a = 0.0
        d = 0.0
        for t in range(nt):
            a += pdw[t, c]
            d += pdb[t, c]
        dw[c] = a
        db[c] = d


# --------------------------------------------------------------------------- rungs
def _x(a):
    a = np.ascontiguousarray(a)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"layernorm takes float32 or float64 arrays, not {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"layernorm kernels take x of shape (N, C), got {a.shape}")
    return a


def _vec(a, C, dt, fill):
    if a is None:
        return np.full(C, fill, dtype=dt)
    a = np.ascontiguousarray(a, dtype=dt)
    if a.shape != (C,):
        raise ValueError(f"layernorm: weight/bias of shape {a.shape}, expected ({C},)")
    return a


def _forward(kernel):
    """layernorm_forward(x, w, b, eps) -> (y, mean, rstd), running ``kernel``."""
    def run(x, w, b, eps=1e-5):
        x = _x(x)
        N, C = x.shape
        dt = x.dtype
        out = np.empty_like(x)
        mean = np.empty(N, dtype=dt)
        rstd = np.empty(N, dtype=dt)
        if x.size:
            pick(kernel, x.size)(out, mean, rstd, x, _vec(w, C, dt, 1.0), _vec(b, C, dt, 0.0),
                                 dt.type(eps))
        return out, mean, rstd
    return picks(run)


def _backward(kernel):
    """layernorm_backward(dy, x, w, mean, rstd) -> (dx, dw, db), running ``kernel``."""
    def run(dy, x, w, mean, rstd):
        x = _x(x)
        N, C = x.shape
        dt = x.dtype
        dy = np.ascontiguousarray(dy, dtype=dt)
        if dy.shape != x.shape:
            raise ValueError(f"layernorm_backward: dy shape {dy.shape} does not match x {x.shape}")
        dx = np.empty_like(x)
        dw = np.zeros(C)
        db = np.zeros(C)
        if x.size:
            k = pick(kernel, x.size)
            k(dx, dw, db, dy, x, _vec(w, C, dt, 1.0), np.ascontiguousarray(mean, dtype=dt),
              np.ascontiguousarray(rstd, dtype=dt), _threads(k))
        return dx, (dw.astype(dt) if w is not None else None), db.astype(dt)
    return picks(run)


FLOAT = dtype_fits(("float32", "float64"))
LADDERS = (
    Ladder("layernorm_forward", "cpu", default=3, about="row moments, normalise, affine", rungs=(
        Rung(1, _forward(layernorm_forward_v1), "plain loops, two passes, one thread", FLOAT),
        Rung(2, _forward(layernorm_forward_v2), "prange over rows, dtype sums", FLOAT),
        Rung(3, _forward(layernorm_forward_v3), "one shifted pass for both moments", FLOAT),
    )),
    Ladder("layernorm_backward", "cpu", default=2, about="dx per row, dw/db over rows", rungs=(
        Rung(1, _backward(layernorm_backward_v1), "plain loops, one thread", FLOAT),
        Rung(2, _backward(layernorm_backward_v2), "per-thread row blocks, float64 partials",
             FLOAT),
    )),
)
