"""SwiGLU (Shazeer 2020, "GLU variants improve transformer"), Numba CPU: Llama's MLP gate.

y = silu(gate) * up,  silu(g) = g * s,  s = sigmoid(g) = 1 / (1 + exp(-g)).
dgate = dy * up * s * (1 + g (1 - s)),  dup = dy * g * s.
gate, up, y: (M,) (any shape, seen flattened; in the MLP M = B*T*F, F the hidden width).
One exp and one division per element; 1 / (1 + exp(-g)) needs no guard: exp(-g) overflowing
to a huge value (fast_exp clamps it at exp(88) / exp(709)) gives s = 0 as it should.

Versions (not timed: the steps repeat gelu.py's, whose gains are measured there):

swiglu_forward / swiglu_backward
  v1  plain loop with math.exp (a scalar libm call: the loop does not vectorise), one thread.
  v2  prange over blocks of 4096, fast_exp from _fastmath (only +, *, floor and a bit cast, so
      the loop vectorises), constants in the input dtype, each block indexed from 0.  (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference, saturated gates) and
tests/kernels/test_cpu_llama_ops.py (finite differences of the reference). Benchmark:
``python benchmarks/bench_kernels.py --op swiglu``.
"""

import math

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ._fastmath import FASTMATH, fast_exp
from ._serial import pick, picks

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")
_BLOCK = 4096  # elements per prange step (16 KiB of float32 per input)


# --------------------------------------------------------------------------- forward
@njit(**_JIT)
def swiglu_forward_v1(out, gate, up):
    # gate, up, out: (M,)
    for i in range(gate.shape[0]):
        g = gate[i]
        out[i] = g / (1.0 + math.exp(-g)) * up[i]


@njit(parallel=True, **_JIT)
def swiglu_forward_v2(out, gate, up):
    # gate, up, out: (M,), in blocks of _BLOCK so each thread runs a vectorised inner loop
    M = gate.shape[0]
    one = gate.dtype.type(1.0)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        gb, ub, ob = gate[lo:hi], up[lo:hi], out[lo:hi]  # from 0: a provably >= 0 index
        for i in range(hi - lo):
            g = gb[i]
            ob[i] = g / (one + fast_exp(-g)) * ub[i]


# --------------------------------------------------------------------------- backward
@njit(**_JIT)
def swiglu_backward_v1(dgate, dup, dy, gate, up):
    # dy, gate, up, dgate, dup: (M,)
    for i in range(gate.shape[0]):
        g = gate[i]
        s = 1.0 / (1.0 + math.exp(-g))
        dgate[i] = dy[i] * up[i] * s * (1.0 + g * (1.0 - s))
        dup[i] = dy[i] * g * s


@njit(parallel=True, **_JIT)
def swiglu_backward_v2(dgate, dup, dy, gate, up):
    # dy, gate, up, dgate, dup: (M,), in blocks of _BLOCK
    M = gate.shape[0]
    one = gate.dtype.type(1.0)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        gb, ub, db = gate[lo:hi], up[lo:hi], dy[lo:hi]
        dgb, dub = dgate[lo:hi], dup[lo:hi]
        for i in range(hi - lo):
            g = gb[i]
            s = one / (one + fast_exp(-g))
            dgb[i] = db[i] * ub[i] * s * (one + g * (one - s))
            dub[i] = db[i] * g * s


# --------------------------------------------------------------------------- rungs
def _float(a, dtype=None):
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"swiglu takes float32 or float64 arrays, not {a.dtype}")
    return a


def _same(name, a, like):
    a = _float(a, like.dtype)
    if a.shape != like.shape:
        raise ValueError(f"swiglu: {name} of shape {a.shape} does not match gate {like.shape}")
    return a


def _forward(kernel):
    """swiglu_forward(gate, up) -> y, running ``kernel`` on the flattened arrays."""
    def run(gate, up):
        gate = _float(gate)
        up = _same("up", up, gate)
        out = np.empty_like(gate)
        pick(kernel, gate.size)(out.reshape(-1), gate.reshape(-1), up.reshape(-1))
        return out
    return picks(run)


def _backward(kernel):
    """swiglu_backward(dy, gate, up) -> (dgate, dup), running ``kernel``."""
    def run(dy, gate, up):
        gate = _float(gate)
        up, dy = _same("up", up, gate), _same("dy", dy, gate)
        dgate, dup = np.empty_like(gate), np.empty_like(gate)
        pick(kernel, gate.size)(dgate.reshape(-1), dup.reshape(-1), dy.reshape(-1),
                                gate.reshape(-1), up.reshape(-1))
        return dgate, dup
    return picks(run)


FWD = dtype_fits(("float32", "float64"))  # gate
BWD = dtype_fits(("float32", "float64"), arg=1)  # gate (after dy)
LADDERS = (
    Ladder("swiglu_forward", "cpu", default=2, about="silu(gate) * up, elementwise", rungs=(
        Rung(1, _forward(swiglu_forward_v1),
             "plain loop, math.exp (scalar libm, no vectorisation), one thread", FWD),
        Rung(2, _forward(swiglu_forward_v2),
             "prange over blocks of 4096, fast_exp: the loop vectorises", FWD),
    )),
    Ladder("swiglu_backward", "cpu", default=2, about="dgate, dup elementwise", rungs=(
        Rung(1, _backward(swiglu_backward_v1),
             "plain loop, math.exp (scalar libm, no vectorisation), one thread", BWD),
        Rung(2, _backward(swiglu_backward_v2),
             "prange over blocks of 4096, fast_exp: the loop vectorises", BWD),
    )),
)
