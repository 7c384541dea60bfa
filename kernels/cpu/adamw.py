"""AdamW, one fused in-place step (Loshchilov & Hutter 2019, decoupled weight decay), Numba CPU.

m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
p = p - lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)          t = step, counting from 1
p, g, m, v: any shape, contiguous, seen flat as (M,). The NumPy reference makes about ten
passes over memory with temporaries (m*=, m+=, g*g, mhat, vhat, sqrt, ...); the fused loop reads
p, g, m, v once and writes p, m, v once: 28 bytes per float32 parameter, memory-bound.

Versions (speed-up vs kernels.reference, float32, 2 threads; all parameters of the small
GPT as one flat buffer, 10.75 M, 301 MB moved / one (1536, 384) MLP weight, 0.59 M):

adamw_step
  v1  plain loop over the flat arrays, float64 scalars, one thread: 5.7x / 2.8x.
  v2  prange over blocks of 4096 (each indexed from 0, so it vectorises), all scalars
      (1 - b1, 1/(1 - b1^t), 1/sqrt(1 - b2^t), ...) precomputed in the parameter dtype so the
      float32 loop stays float32: 8.3x / 12.7x (13.4 ms for 301 MB: 22 GB/s, near the
      machine's ~32 GB/s copy bandwidth).  (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference) and tests/kernels/test_cpu_adamw.py
(in-place contract). Benchmark: ``python benchmarks/bench_kernels.py --op adamw``; measurement
conditions: benchmarks/README.md.
"""

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ._fastmath import FASTMATH
from ._serial import pick, picks

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")
_BLOCK = 4096


@njit(**_JIT)
def adamw_step_v1(p, m, v, g, lr, beta1, beta2, eps, weight_decay, step):
    # p, m, v: (M,) updated in place   g: (M,)
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    for i in range(p.shape[0]):
        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
        mhat = m[i] / bc1
        vhat = v[i] / bc2
        p[i] -= lr * (mhat / (np.sqrt(vhat) + eps) + weight_decay * p[i])


@njit(parallel=True, **_JIT)
def adamw_step_v2(p, m, v, g, lr, beta1, beta2, eps, weight_decay, step):
    # p, m, v: (M,) updated in place   g: (M,)
    M = p.shape[0]
    t = p.dtype.type
    b1, b2 = t(beta1), t(beta2)
    c1, c2 = t(1.0 - beta1), t(1.0 - beta2)
    inv_bc1 = t(1.0 / (1.0 - beta1 ** step))
    rs_bc2 = t(1.0 / np.sqrt(1.0 - beta2 ** step))  # sqrt(vhat) = sqrt(v) / sqrt(bc2)
    lr_, eps_, wd = t(lr), t(eps), t(weight_decay)
    for blk in prange((M + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(M, (blk + 1) * _BLOCK)
        # block views indexed from 0: numba then knows the index is non-negative and drops
        # the negative-index wraparound select that otherwise stops vectorisation
        pb, mb, vb, gb = p[lo:hi], m[lo:hi], v[lo:hi], g[lo:hi]
        for i in range(hi - lo):
            gi = gb[i]
            mi = b1 * mb[i] + c1 * gi
            vi = b2 * vb[i] + c2 * gi * gi
            mb[i] = mi
            vb[i] = vi
            pi = pb[i]
            pb[i] = pi - lr_ * (mi * inv_bc1 / (np.sqrt(vi) * rs_bc2 + eps_) + wd * pi)


def _flat_inplace(a, name, dtype):
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        raise ValueError(f"adamw_step updates {name} in place: it must be a C-contiguous array")
    if a.dtype != dtype:
        raise TypeError(f"adamw_step: {name} is {a.dtype}, parameter is {dtype}")
    return a.reshape(-1)  # a view, so writes land in the caller's array


def _step(kernel):
    """adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step): p, m, v in place."""
    def run(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        if p.dtype != np.float32 and p.dtype != np.float64:
            raise TypeError(f"adamw_step takes float32 or float64 parameters, not {p.dtype}")
        p1 = _flat_inplace(p, "p", p.dtype)
        m1 = _flat_inplace(m, "m", p.dtype)
        v1 = _flat_inplace(v, "v", p.dtype)
        g1 = np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)
        if not (g1.shape == m1.shape == v1.shape == p1.shape):
            raise ValueError(f"adamw_step: shapes differ: p {p.shape}, g {np.shape(g)}, "
                             f"m {m.shape}, v {v.shape}")
        pick(kernel, p1.size)(p1, m1, v1, g1, float(lr), float(beta1), float(beta2), float(eps),
                              float(weight_decay), int(step))
    return picks(run)


LADDERS = (
    Ladder("adamw_step", "cpu", default=2, about="one fused in-place pass over p, g, m, v",
           rungs=(
        Rung(1, _step(adamw_step_v1), "plain loop, float64 scalars, one thread",
             dtype_fits(("float32", "float64"))),
        Rung(2, _step(adamw_step_v2), "prange blocks, scalars precomputed in the dtype",
             dtype_fits(("float32", "float64"))),
    )),
)
