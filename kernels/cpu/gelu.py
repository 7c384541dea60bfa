"""GELU, tanh approximation (Hendrycks & Gimpel 2016, as in GPT-2), and its bias-fused form.

y = 0.5 x (1 + tanh(u)),  u = k (x + a x^3),  k = sqrt(2/pi),  a = 0.044715
Since 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)), the same y is x / (1 + exp(-2u)),
and the derivative 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2) becomes, with s = sigmoid(2u)
and 1 - s = exp(-2u) s:   s + 2 x s (1 - s) k (1 + 3 a x^2).   One exp and one division per
element, no tanh, no cancellation (1 - t^2 loses every digit once |u| > 9 in float32).
gelu_* see the input flattened to (M,) (any shape); bias_gelu_* take x: (N, C), b: (C,), the
first Linear of the MLP (C = 4 * 384 = 1536 in the small config); db = sum_n dx is reduced
with per-thread float64 partials.

The constants k and a are kernels/reference.py's GELU_K and GELU_A.

Versions (speed-up vs kernels.reference, float32, 2 threads; small (2048, 1536) / tiny
(768, 512)):

gelu_forward
  v1  plain loop, math.tanh (a scalar libm call, no vectorisation), one thread: 0.11x / 0.09x.
  v2  prange over blocks of 4096 + fast_tanh from _fastmath, constants in the input dtype,
      each block indexed from 0 (numba cannot prove blk*4096 + i >= 0 and adds a
      negative-index select that stopped vectorisation): 3.9x / 3.0x.
  v3  sigmoid form x / (1 + fast_exp(-2u)): 6.9x / 5.6x.  (default)
gelu_backward
  v1  plain loop, math.tanh, one thread: 0.30x / 0.24x.
  v2  prange blocks + fast_tanh: 3.9x / 6.8x.
  v3  sigmoid form: 10.9x / 9.4x.  (default)
bias_gelu_forward
  v1  plain loops, math.tanh, one thread: 0.09x / 0.12x.
  v2  prange over rows, sigmoid form, x + b fused (no (N, C) temporary): 5.1x / 7.4x. (default)
bias_gelu_backward
  v1  plain loops, math.tanh, one thread, db accumulated row by row: 0.28x / 0.24x.
  v2  prange over per-thread row blocks, sigmoid form, float64 partial db: 3.9x / 4.2x.
  v3  each row in two loops (dx map, then the partial-db add): 13.4x / 7.6x.  (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference) and tests/kernels/test_cpu_gelu.py
(extremes, shapes). Benchmark: ``python benchmarks/bench_kernels.py --op gelu`` (and
``--op bias_gelu``); measurement conditions: benchmarks/README.md.
"""

import math

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ..reference import GELU_A, GELU_K
from ._fastmath import FASTMATH, fast_exp, fast_tanh
from ._serial import pick, picks
from ._serial import threads as _threads

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")
_EMAX = 40.0  # cap on -2u in the backward (see _dgelu_sig)
_BLOCK = 4096  # elements per prange step of the flat kernels (16 KiB of float32)


# --------------------------------------------------------------------------- element math
@njit(fastmath=FASTMATH, error_model="numpy")
def _consts(x):
    # k, a, 1, 2, 3, 1/2 in the dtype of array x: a float64 literal would widen float32 math
    t = x.dtype.type
    return t(GELU_K), t(GELU_A), t(1.0), t(2.0), t(3.0), t(0.5), t(_EMAX)


@njit(fastmath=FASTMATH, error_model="numpy")
def _gelu_sig(x, c):
    # y = x * sigmoid(2u) = x / (1 + exp(-2u))
    k, a, one, two, three, half, emax = c
    u = k * (x + a * x * x * x)
    return x / (one + fast_exp(-two * u))


@njit(fastmath=FASTMATH, error_model="numpy")
def _dgelu_sig(x, c):
    # dy/dx = s + 2 x s (1 - s) k (1 + 3 a x^2), s = 1 / (1 + e), 1 - s = e s, e = exp(-2u).
    # e is capped at exp(40): under fastmath the products may be reordered, and exp(88) times
    # 2x overflows float32. Past the cap (x < -7.6) dy/dx < 1e-15 and is returned as 0.
    k, a, one, two, three, half, emax = c
    u = k * (x + a * x * x * x)
    z = -two * u
    e = fast_exp(min(z, emax))
    s = one / (one + e)
    d = s + two * x * (e * s * s) * k * (one + three * a * x * x)
    return d if z < emax else d - d  # d - d: a zero of the right type


@njit(fastmath=FASTMATH, error_model="numpy")
def _gelu_tanh(x, c):
    k, a, one, two, three, half, emax = c
    return half * x * (one + fast_tanh(k * (x + a * x * x * x)))


@njit(fastmath=FASTMATH, error_model="numpy")
def _dgelu_tanh(x, c):
    k, a, one, two, three, half, emax = c
    t = fast_tanh(k * (x + a * x * x * x))
    return half * (one + t) + half * x * (one - t * t) * k * (one + three * a * x * x)


@njit(fastmath=FASTMATH, error_model="numpy")
def _dgelu_libm(x):
    # the reference formula with math.tanh, float64 constants (the plain v1 loops)
    t = math.tanh(GELU_K * (x + GELU_A * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_A * x * x)


# --------------------------------------------------------------------------- gelu forward
@njit(**_JIT)
def gelu_forward_v1(out, x):
    # x, out: (M,)
    for i in range(x.shape[0]):
        xi = x[i]
        out[i] = 0.5 * xi * (1.0 + math.tanh(GELU_K * (xi + GELU_A * xi * xi * xi)))


@njit(parallel=True, **_JIT)
def gelu_forward_v2(out, x):
    # x, out: (M,), split in blocks of _BLOCK so each thread runs a vectorised inner loop
    M = x.shape[0]
    c = _consts(x)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        xb, ob = x[lo:hi], out[lo:hi]  # index from 0: a provably non-negative index vectorises
        for i in range(hi - lo):
            ob[i] = _gelu_tanh(xb[i], c)


@njit(parallel=True, **_JIT)
def gelu_forward_v3(out, x):
    # x, out: (M,)
    M = x.shape[0]
    c = _consts(x)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        xb, ob = x[lo:hi], out[lo:hi]
        for i in range(hi - lo):
            ob[i] = _gelu_sig(xb[i], c)


# --------------------------------------------------------------------------- gelu backward
@njit(**_JIT)
def gelu_backward_v1(dx, dy, x):
    # dy, x, dx: (M,)
    for i in range(x.shape[0]):
        dx[i] = dy[i] * _dgelu_libm(x[i])


@njit(parallel=True, **_JIT)
def gelu_backward_v2(dx, dy, x):
    # dy, x, dx: (M,)
    M = x.shape[0]
    c = _consts(x)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        xb, dyb, dxb = x[lo:hi], dy[lo:hi], dx[lo:hi]
        for i in range(hi - lo):
            dxb[i] = dyb[i] * _dgelu_tanh(xb[i], c)


@njit(parallel=True, **_JIT)
def gelu_backward_v3(dx, dy, x):
    # dy, x, dx: (M,)
    M = x.shape[0]
    c = _consts(x)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        xb, dyb, dxb = x[lo:hi], dy[lo:hi], dx[lo:hi]
        for i in range(hi - lo):
            dxb[i] = dyb[i] * _dgelu_sig(xb[i], c)


# --------------------------------------------------------------------------- bias + gelu
@njit(**_JIT)
def bias_gelu_forward_v1(out, x, b):
    # x, out: (N, C)  b: (C,)
    N, C = x.shape
    for n in range(N):
        for c in range(C):
            xi = x[n, c] + b[c]
            out[n, c] = 0.5 * xi * (1.0 + math.tanh(GELU_K * (xi + GELU_A * xi * xi * xi)))


@njit(parallel=True, **_JIT)
def bias_gelu_forward_v2(out, x, b):
    # x, out: (N, C)  b: (C,)
    N, C = x.shape
    kc = _consts(x)
    for n in prange(N):
        for c in range(C):
            out[n, c] = _gelu_sig(x[n, c] + b[c], kc)


@njit(**_JIT)
def bias_gelu_backward_v1(dx, db, dy, x, b, nt):
    # dy, x, dx: (N, C)  b: (C,)  db: (C,) float64, overwritten  (nt unused: one thread)
    N, C = x.shape
    db[:] = 0.0
    for n in range(N):
        for c in range(C):
            d = dy[n, c] * _dgelu_libm(x[n, c] + b[c])
            dx[n, c] = d
            db[c] += d


@njit(parallel=True, **_JIT)
def bias_gelu_backward_v2(dx, db, dy, x, b, nt):
    # dy, x, dx: (N, C)  b: (C,)  db: (C,) float64, overwritten  nt: number of threads
    N, C = x.shape
    kc = _consts(x)
    pdb = np.zeros((nt, C))  # per-thread float64 partial sums of dx over its rows
    for t in prange(nt):
        for n in range(t * N // nt, (t + 1) * N // nt):
            for c in range(C):
                d = dy[n, c] * _dgelu_sig(x[n, c] + b[c], kc)
                dx[n, c] = d
                pdb[t, c] += d
    for c in range(C):
        s = 0.0
        for t in range(nt):
            s += pdb[t, c]
        db[c] = s


@njit(parallel=True, **_JIT)
def bias_gelu_backward_v3(dx, db, dy, x, b, nt):
    # dy, x, dx: (N, C)  b: (C,)  db: (C,) float64, overwritten  nt: number of threads
    # As v2, but each row in two loops: the element-wise dx first (a pure map, vectorises
    # like gelu_backward_v3), then dx's row added into the thread's float64 partial. Fused in
    # one loop, the stores to dx and to the partial defeat LLVM's alias checks and the loop
    # stays scalar.
    N, C = x.shape
    kc = _consts(x)
    pdb = np.zeros((nt, C))
    for t in prange(nt):
        acc = np.zeros(C)  # float64 partial sum of dx over this thread's rows
        for n in range(t * N // nt, (t + 1) * N // nt):
            xr, dyr, dxr = x[n], dy[n], dx[n]
            for c in range(C):
                dxr[c] = dyr[c] * _dgelu_sig(xr[c] + b[c], kc)
            for c in range(C):
                acc[c] += dxr[c]
        pdb[t, :] = acc
    for c in range(C):
        s = 0.0
        for t in range(nt):
            s += pdb[t, c]
        db[c] = s


# --------------------------------------------------------------------------- rungs
def _float(a, dtype=None):
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"gelu kernels take float32 or float64 arrays, not {a.dtype}")
    return a


def _gelu_forward(kernel):
    def run(x):  # any shape, seen flat as (M,)
        x = _float(x)
        out = np.empty_like(x)
        pick(kernel, x.size)(out.reshape(-1), x.reshape(-1))
        return out
    return picks(run)


def _gelu_backward(kernel):
    def run(dy, x):
        x = _float(x)
        dy = _float(dy, x.dtype)
        if dy.shape != x.shape:
            raise ValueError(f"gelu_backward: dy shape {dy.shape} does not match x {x.shape}")
        dx = np.empty_like(x)
        pick(kernel, x.size)(dx.reshape(-1), dy.reshape(-1), x.reshape(-1))
        return dx
    return picks(run)


def _bias_args(x, b):
    x = _float(x)
    if x.ndim != 2 or np.shape(b) != (x.shape[1],):
        raise ValueError(f"bias_gelu takes x (N, C) and b (C,), got {x.shape} and {np.shape(b)}")
    return x, _float(b, x.dtype)


def _bias_gelu_forward(kernel):
    def run(x, b):
        x, b = _bias_args(x, b)
        out = np.empty_like(x)
        if x.size:
            pick(kernel, x.size)(out, x, b)
        return out
    return picks(run)


def _bias_gelu_backward(kernel):
    def run(dy, x, b):
        x, b = _bias_args(x, b)
        dy = _float(dy, x.dtype)
        if dy.shape != x.shape:
            raise ValueError(f"bias_gelu_backward: dy shape {dy.shape} does not match x {x.shape}")
        dx = np.empty_like(x)
        db = np.zeros(x.shape[1])
        if x.size:
            k = pick(kernel, x.size)
            k(dx, db, dy, x, b, _threads(k))
        return dx, db.astype(x.dtype)
    return picks(run)


FLOAT = dtype_fits(("float32", "float64"))
LADDERS = (
    Ladder("gelu_forward", "cpu", default=3, about="elementwise, tanh approximation", rungs=(
        Rung(1, _gelu_forward(gelu_forward_v1), "plain loop, math.tanh, one thread", FLOAT),
        Rung(2, _gelu_forward(gelu_forward_v2), "prange blocks + fast_tanh", FLOAT),
        Rung(3, _gelu_forward(gelu_forward_v3), "sigmoid form x / (1 + exp(-2u))", FLOAT),
    )),
    Ladder("gelu_backward", "cpu", default=3, rungs=(
        Rung(1, _gelu_backward(gelu_backward_v1), "plain loop, math.tanh, one thread", FLOAT),
        Rung(2, _gelu_backward(gelu_backward_v2), "prange blocks + fast_tanh", FLOAT),
        Rung(3, _gelu_backward(gelu_backward_v3), "sigmoid form, one exp per element", FLOAT),
    )),
    Ladder("bias_gelu_forward", "cpu", default=2, about="gelu(x + b), the MLP epilogue", rungs=(
        Rung(1, _bias_gelu_forward(bias_gelu_forward_v1), "plain loops, math.tanh, one thread",
             FLOAT),
        Rung(2, _bias_gelu_forward(bias_gelu_forward_v2), "prange over rows, sigmoid form, "
             "x + b fused", FLOAT),
    )),
    Ladder("bias_gelu_backward", "cpu", default=3, about="dx, and db summed over rows", rungs=(
        Rung(1, _bias_gelu_backward(bias_gelu_backward_v1), "plain loops, math.tanh, one "
             "thread", FLOAT),
        Rung(2, _bias_gelu_backward(bias_gelu_backward_v2), "per-thread row blocks, sigmoid "
             "form, float64 partial db", FLOAT),
        Rung(3, _bias_gelu_backward(bias_gelu_backward_v3), "each row in two loops: dx map, "
             "then the db add", FLOAT),
    )),
)
