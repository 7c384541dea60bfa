"""Rotary position embeddings (Su et al. 2021, RoFormer), Numba CPU: Llama's positions.

Each pair (x1, x2) of a head's D entries is turned by its angle theta[t, i]:
  y1 = x1 cos - x2 sin,  y2 = x1 sin + x2 cos.      x, y: (B, H, T, D)  cos, sin: (Bc, T, D/2)
with Bc = 1 (one set of positions for every row) or Bc = B (per-row positions, left padding).
Pair i is (x[i], x[i + D/2]) in the half-split layout (Hugging Face) and (x[2i], x[2i+1]) in the
interleaved one (Meta, GGUF). The backward is the rotation by -theta (a rotation's transpose),
so forward and backward are one kernel, ``rope_rotate_vN``, called with sign +1 or -1 on sin.
Pure streaming: 2 reads, 2 writes and 4 multiply-adds per pair; the cos/sin row (D/2 values)
is shared by the H heads of a position and stays in L1.

Versions (not timed: a streaming map like gelu.py's, whose prange gain is measured there):

rope_forward / rope_backward
  v1  plain loops over (b, h, t, i), one thread: the readable definition.
  v2  prange over the B*H*T rows of D entries, the layout test hoisted out of the inner loop
      so the half-split loop is a contiguous map that vectorises.  (default)

The table of rungs and defaults is ``LADDERS`` at the end of this file. Tests:
tests/kernels/test_ladders.py (every rung vs the reference, both layouts, per-row positions) and
tests/kernels/test_cpu_llama_ops.py (layouts, angles, finite differences of the reference).
Benchmark: ``python benchmarks/bench_kernels.py --op rope``.
"""

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung, dtype_fits
from ._fastmath import FASTMATH
from ._serial import pick, picks

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")


@njit(**_JIT)
def rope_rotate_v1(out, x, cos, sin, sign, interleaved):
    # x, out: (B, H, T, D)  cos, sin: (Bc, T, D/2), Bc in {1, B}  sign: +1 forward, -1 backward
    B, H, T, D = x.shape
    half = D // 2
    for b in range(B):
        bc = b if cos.shape[0] > 1 else 0
        for h in range(H):
            for t in range(T):
                for i in range(half):
                    if interleaved:
                        j1, j2 = 2 * i, 2 * i + 1
                    else:
                        j1, j2 = i, i + half
                    c, s = cos[bc, t, i], sign * sin[bc, t, i]
                    x1, x2 = x[b, h, t, j1], x[b, h, t, j2]
                    out[b, h, t, j1] = x1 * c - x2 * s
                    out[b, h, t, j2] = x1 * s + x2 * c


@njit(parallel=True, **_JIT)
def rope_rotate_v2(out, x, cos, sin, sign, interleaved):
    # x, out: (B, H, T, D)  cos, sin: (Bc, T, D/2), Bc in {1, B}  sign: +1 forward, -1 backward
    B, H, T, D = x.shape
    half = D // 2
    per_batch = cos.shape[0] > 1
    sg = x.dtype.type(sign)
    for r in prange(B * H * T):  # one row of D entries per step
        b = r // (H * T)
        h = (r // T) % H
        t = r % T
        bc = b if per_batch else 0
        xr, orow = x[b, h, t], out[b, h, t]
        cr, sr = cos[bc, t], sin[bc, t]
        if interleaved:
            for i in range(half):
                c, s = cr[i], sg * sr[i]
                x1, x2 = xr[2 * i], xr[2 * i + 1]
                orow[2 * i] = x1 * c - x2 * s
                orow[2 * i + 1] = x1 * s + x2 * c
        else:
            for i in range(half):
                c, s = cr[i], sg * sr[i]
                x1, x2 = xr[i], xr[i + half]
                orow[i] = x1 * c - x2 * s
                orow[i + half] = x1 * s + x2 * c


# --------------------------------------------------------------------------- rungs
def _args(x, cos, sin):
    x = np.ascontiguousarray(x)
    if x.dtype != np.float32 and x.dtype != np.float64:
        raise TypeError(f"rope takes float32 or float64 arrays, not {x.dtype}")
    if x.ndim != 4 or x.shape[-1] % 2:
        raise ValueError(f"rope takes x of shape (B, H, T, D) with D even, got {x.shape}")
    B, H, T, D = x.shape
    cs = []
    for a in (cos, sin):
        a = np.ascontiguousarray(a, dtype=x.dtype)
        a = a[None] if a.ndim == 2 else a  # (T, D/2) -> (1, T, D/2)
        if a.ndim != 3 or a.shape[1:] != (T, D // 2) or a.shape[0] not in (1, B):
            raise ValueError(f"rope: cos/sin of shape {a.shape} do not fit x of shape {x.shape}; "
                             f"expected ({T}, {D // 2}) or ({B}, {T}, {D // 2})")
        cs.append(a)
    return x, cs[0], cs[1]


def _rotate(kernel, sign):
    """rope_forward(x, cos, sin, interleaved) (sign +1) or rope_backward(dy, cos, sin,
    interleaved) (sign -1) -> the rotated array, running ``kernel``."""
    def run(x, cos, sin, interleaved=False):
        x, cos, sin = _args(x, cos, sin)
        out = np.empty_like(x)
        if x.size:
            pick(kernel, x.size)(out, x, cos, sin, sign, bool(interleaved))
        return out
    return picks(run)


FLOAT = dtype_fits(("float32", "float64"))  # x (dy)
LADDERS = tuple(
    Ladder(op, "cpu", default=2, about="rotary embedding of (B, H, T, D) by (T, D/2) angles",
           rungs=(
        Rung(1, _rotate(rope_rotate_v1, sign), "plain loops over (b, h, t, i), one thread", FLOAT),
        Rung(2, _rotate(rope_rotate_v2, sign),
             "prange over rows, layout test hoisted out of the inner loop", FLOAT),
    ))
    for op, sign in (("rope_forward", 1.0), ("rope_backward", -1.0))
)
