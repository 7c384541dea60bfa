"""Launchers for kernels/cuda/gelu.cu: GELU and bias + GELU, forward and backward, v1..v2 (see
its header). The rungs have the reference signatures ``gelu_forward(x)``, ``gelu_backward(dy,
x)``, ``bias_gelu_forward(x, b)``, ``bias_gelu_backward(dy, x, b) -> (dx, db)`` and take float32
inputs with fewer than 2^31 elements (bias_gelu: x (N, C), b (C,)); anything else runs
kernels/reference.py on CuPy. The table is ``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "gelu.cu"
DEFINES = dict(GL_THREADS=256, GL_ROWS=8)
CONFIGS = [(FILE, DEFINES), (FILE, dict(GL_THREADS=512, GL_ROWS=16))]
OPS = ("gelu_forward", "gelu_backward", "bias_gelu_forward", "bias_gelu_backward")


def kernel_names(defines):
    return [
        "gelu_forward_v1",
        "gelu_backward_v1",
        "bias_gelu_forward_v1",
        "bias_gelu_backward_dx_v1",
        "colsum_v1",
        "gelu_forward_v2",
        "gelu_backward_v2",
        "bias_gelu_forward_v2",
        "bias_gelu_backward_v2",
        "colsum_partials",
    ]


def _fn(name):
    return cc.function(FILE, name, DEFINES)


def fits(*arrays):
    """float32, under 2^31 elements"""
    for a in arrays:
        if not (cc.is_cupy(a) and cc.dtype_name(a) == "float32" and a.size < 2**31):
            return f"{cc.dtype_name(a)} input of {a.size} elements"
    return None


def fits_bias(*arrays):
    """float32 x (N, C) and b (C,), under 2^31 elements"""
    x, b = arrays[-2], arrays[-1]
    if not (x.ndim == 2 and b.ndim == 1 and b.shape[0] == x.shape[1]):
        return f"x {x.shape} and b {b.shape}"
    return fits(*arrays)


def _grid_stride_blocks(n):
    import cupy as cp

    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    return max(1, min(cc.ceil_div(n, DEFINES["GL_THREADS"] * 4), sms * 16))


def run(op, version, *arrays):
    """``op`` with kernel ``version``; arrays as the reference function takes them."""
    import cupy as cp

    arrays = [cc.contiguous(a) for a in arrays]
    T = DEFINES["GL_THREADS"]
    if op in ("gelu_forward", "gelu_backward"):
        n = arrays[0].size
        out = cp.empty(arrays[-1].shape, cp.float32)
        if n == 0:
            return out
        if version == 1:
            cc.launch(_fn(f"{op}_v1"), cc.ceil_div(n, T), T, (out, *arrays, n))
        else:
            vec = cc.aligned16(out, *arrays)
            cc.launch(_fn(f"{op}_v2"), _grid_stride_blocks(n), T, (out, *arrays, n, vec))
        return out
    b = arrays[-1]
    x = arrays[-2]
    N, C = x.shape
    out = cp.empty((N, C), cp.float32)
    if op == "bias_gelu_forward":
        if N * C == 0:
            return out
        if version == 1:
            cc.launch(_fn("bias_gelu_forward_v1"), cc.ceil_div(N * C, T), T, (out, x, b, N, C))
        else:
            vec = C % 4 == 0 and cc.aligned16(out, x, b)
            cc.launch(
                _fn("bias_gelu_forward_v2"), _grid_stride_blocks(N * C), T, (out, x, b, N, C, vec)
            )
        return out
    dy = arrays[0]
    db = cp.zeros((C,), cp.float32)
    if N * C == 0:
        return out, db
    if version == 1:
        cc.launch(_fn("bias_gelu_backward_dx_v1"), cc.ceil_div(N * C, T), T, (out, dy, x, b, N, C))
        cc.launch(_fn("colsum_v1"), cc.ceil_div(C, 128), 128, (db, out, N, C))
    else:
        R = DEFINES["GL_ROWS"]
        sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        col_blocks = cc.ceil_div(C, 32)
        # enough row groups to give every SM a few blocks; each group writes one partial row
        G = max(1, min(cc.ceil_div(N, R), cc.ceil_div(4 * sms, col_blocks)))
        partial = cp.empty((G, C), cp.float32)
        cc.launch(
            _fn("bias_gelu_backward_v2"), (col_blocks, G), (32, R), (out, partial, dy, x, b, N, C)
        )
        cc.launch(_fn("colsum_partials"), cc.ceil_div(C, 128), 128, (db, partial, G, C))
    return out, db


def _version(op, version):
    def fn(*arrays):
        return run(op, version, *arrays)
    fn.__name__ = f"{op}_v{version}"
    return fn


_NOTES = {1: "one thread per element", 2: "grid-stride, float4 loads where aligned"}
_BIAS_NOTES = {1: "dx per element, then a column-sum kernel for db",
               2: "dx and per-block partial db in one pass, then a partials sum"}


def _ladder(op):
    notes = _BIAS_NOTES if op == "bias_gelu_backward" else _NOTES
    f = fits_bias if op.startswith("bias") else fits
    return Ladder(op, "cuda", default=2, rungs=tuple(
        Rung(v, _version(op, v), notes[v], f) for v in (1, 2)))


LADDERS = tuple(_ladder(op) for op in OPS)
