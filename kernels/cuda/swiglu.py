"""Launchers for kernels/cuda/swiglu.cu (forward and backward v1..v2; see its header).

``swiglu_forward(gate, up)`` and ``swiglu_backward(dy, gate, up) -> (dgate, dup)`` have the
signatures of kernels/reference.py (any shape, the same for every argument). float32 inputs
with fewer than 2^31 elements run the CUDA kernels; anything else goes to the reference.
"""

import functools

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "swiglu.cu"
DEFINES = dict(SG_THREADS=256)
CONFIGS = [(FILE, DEFINES)]
VERSIONS = {"swiglu_forward": (1, 2), "swiglu_backward": (1, 2)}
DEFAULT_VERSION = {"swiglu_forward": 2, "swiglu_backward": 2}


def kernel_names(defines):
    return ["swiglu_forward_v1", "swiglu_backward_v1", "swiglu_forward_v2", "swiglu_backward_v2"]


def _fn(name):
    return cc.function(FILE, name, DEFINES)


def why_not(*arrays):
    """None when the CUDA kernels take these arrays, else the reason (shown by describe())."""
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


def swiglu_forward(gate, up):
    if why_not(gate, up):
        from .. import reference

        return reference.swiglu_forward(gate, up)
    return forward(DEFAULT_VERSION["swiglu_forward"], gate, up)


def swiglu_backward(dy, gate, up):
    if why_not(dy, gate, up):
        from .. import reference

        return reference.swiglu_backward(dy, gate, up)
    return backward(DEFAULT_VERSION["swiglu_backward"], dy, gate, up)


_NOTES = {1: "one thread per element, scalar loads",
          2: "grid-stride loops over float4s, scalar tail"}
LADDERS = (
    Ladder("swiglu_forward", "cuda",
           tuple(Rung(v, functools.partial(forward, v), _NOTES[v], fits=why_not)
                 for v in VERSIONS["swiglu_forward"]),
           DEFAULT_VERSION["swiglu_forward"], about="silu(gate) * up, FP32"),
    Ladder("swiglu_backward", "cuda",
           tuple(Rung(v, functools.partial(backward, v), _NOTES[v], fits=why_not)
                 for v in VERSIONS["swiglu_backward"]),
           DEFAULT_VERSION["swiglu_backward"], about="SwiGLU backward, FP32"),
)
