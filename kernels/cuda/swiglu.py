"""Launchers for kernels/cuda/swiglu.cu (forward and backward v1..v2; see its header).

The rungs have the signatures of kernels/reference.py ``swiglu_forward(gate, up)`` and
``swiglu_backward(dy, gate, up) -> (dgate, dup)`` (any shape, the same for every argument).
They take float32 CuPy inputs with fewer than 2^31 elements (their ``fits``); anything else
runs the reference, which runs on CuPy too. The table is ``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "swiglu.cu"
DEFINES = dict(SG_THREADS=256)
CONFIGS = [(FILE, DEFINES)]


def kernel_names(defines):
    return ["swiglu_forward_v1", "swiglu_backward_v1", "swiglu_forward_v2", "swiglu_backward_v2"]


def _fn(name):
    return cc.function(FILE, name, DEFINES)


def fits(*arrays):
    """float32 arrays of one shape, fewer than 2^31 elements"""
    for a in arrays:
        if not cc.is_cupy(a):
            return "not a CuPy array"
        if cc.dtype_name(a) != "float32":
            return f"{cc.dtype_name(a)} input"
        if a.shape != arrays[0].shape:
            return "arrays of different shapes"
    if arrays[0].size >= 2**31:
        return "2^31 elements or more"
    return None


def _grid(n):
    import cupy as cp

    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    return max(1, min(cc.ceil_div(n, DEFINES["SG_THREADS"] * 4), sms * 16))


def forward(version, gate, up):
    import cupy as cp

    gate, up = cc.contiguous(gate), cc.contiguous(up)
    n = gate.size
    y = cp.empty_like(gate)
    T = DEFINES["SG_THREADS"]
    if n == 0:
        return y
    if version == 1:
        cc.launch(_fn("swiglu_forward_v1"), cc.ceil_div(n, T), T, (y, gate, up, n))
    else:
        vec = cc.aligned16(y, gate, up)
        cc.launch(_fn("swiglu_forward_v2"), _grid(n), T, (y, gate, up, n, vec))
    return y


def backward(version, dy, gate, up):
    import cupy as cp

    dy, gate, up = cc.contiguous(dy), cc.contiguous(gate), cc.contiguous(up)
    n = gate.size
    dgate, dup = cp.empty_like(gate), cp.empty_like(gate)
    T = DEFINES["SG_THREADS"]
    if n == 0:
        return dgate, dup
    if version == 1:
        cc.launch(_fn("swiglu_backward_v1"), cc.ceil_div(n, T), T, (dgate, dup, dy, gate, up, n))
    else:
        vec = cc.aligned16(dgate, dup, dy, gate, up)
        cc.launch(_fn("swiglu_backward_v2"), _grid(n), T, (dgate, dup, dy, gate, up, n, vec))
    return dgate, dup


# --------------------------------------------------------------------------- ladders
def _forward_v(version):
    def fn(gate, up):
        return forward(version, gate, up)
    fn.__name__ = f"swiglu_forward_v{version}"
    return fn


def _backward_v(version):
    def fn(dy, gate, up):
        return backward(version, dy, gate, up)
    fn.__name__ = f"swiglu_backward_v{version}"
    return fn


LADDERS = (
    Ladder("swiglu_forward", "cuda", default=2, about="silu(gate) * up, FP32", rungs=(
        Rung(1, _forward_v(1), "one thread per element, scalar loads", fits),
        Rung(2, _forward_v(2), "grid-stride loops over float4s, scalar tail", fits),
    )),
    Ladder("swiglu_backward", "cuda", default=2, about="SwiGLU backward, FP32", rungs=(
        Rung(1, _backward_v(1), "one thread per element, scalar loads", fits),
        Rung(2, _backward_v(2), "grid-stride loops over float4s, scalar tail", fits),
    )),
)
