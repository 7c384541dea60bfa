"""Launchers for kernels/cuda/rope.cu (v1..v2, one kernel for both directions; see its header).

``rope_forward(x, cos, sin, interleaved)`` and ``rope_backward(dy, cos, sin, interleaved)``
have the signatures of kernels/reference.py: x (B, H, T, D), cos/sin (T, D/2) or (B, T, D/2).
float32 inputs with fewer than 2^31 pairs run the CUDA kernels; anything else goes to the
reference, which runs on CuPy too.
"""

import functools

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "rope.cu"
DEFINES = dict(RP_THREADS=256)
CONFIGS = [(FILE, DEFINES)]
VERSIONS = (1, 2)
DEFAULT_VERSION = {"rope_forward": 2, "rope_backward": 2}


def kernel_names(defines):
    return ["rope_rotate_v1", "rope_rotate_v2"]


def _fn(name):
    return cc.function(FILE, name, DEFINES)


def why_not(x, cos, sin, interleaved=False):
    """None when the CUDA kernels take these arrays, else the reason (shown by describe())."""
    for a in (x, cos, sin):
        if not cc.is_cupy(a):
            return "not a CuPy array"
        if cc.dtype_name(a) != "float32":
            return f"{cc.dtype_name(a)} input"
    if x.ndim != 4 or x.shape[-1] % 2:
        return f"x of shape {tuple(x.shape)}, not (B, H, T, D) with D even"
    B, H, T, D = x.shape
    if cos.shape != sin.shape or cos.shape[-2:] != (T, D // 2) or cos.ndim not in (2, 3) or (
            cos.ndim == 3 and cos.shape[0] not in (1, B)):
        return f"cos/sin of shape {tuple(cos.shape)} for x of shape {tuple(x.shape)}"
    if x.size // 2 >= 2**31:
        return "2^31 pairs or more"
    return None


def rotate(version, sign, x, cos, sin, interleaved=False):
    """x rotated by +theta (sign 1, forward) or -theta (sign -1, backward) with ``version``."""
    import cupy as cp

    x, cos, sin = cc.contiguous(x), cc.contiguous(cos), cc.contiguous(sin)
    B, H, T, D = x.shape
    Bc = cos.shape[0] if cos.ndim == 3 else 1
    y = cp.empty_like(x)
    pairs = x.size // 2
    if pairs == 0:
        return y
    T_ = DEFINES["RP_THREADS"]
    args = (y, x, cos, sin, B, H, T, D, Bc, float(sign), bool(interleaved))
    if version == 1:
        cc.launch(_fn("rope_rotate_v1"), cc.ceil_div(pairs, T_), T_, args)
    else:
        vec = bool(interleaved) and int(x.data.ptr) % 8 == 0 and int(y.data.ptr) % 8 == 0
        sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        grid = max(1, min(cc.ceil_div(pairs, T_), 16 * sms))
        cc.launch(_fn("rope_rotate_v2"), grid, T_, (*args, vec))
    return y


def rope_forward(x, cos, sin, interleaved=False):
    if why_not(x, cos, sin):
        from .. import reference

        return reference.rope_forward(x, cos, sin, interleaved)
    return rotate(DEFAULT_VERSION["rope_forward"], 1.0, x, cos, sin, interleaved)


def rope_backward(dy, cos, sin, interleaved=False):
    if why_not(dy, cos, sin):
        from .. import reference

        return reference.rope_backward(dy, cos, sin, interleaved)
    return rotate(DEFAULT_VERSION["rope_backward"], -1.0, dy, cos, sin, interleaved)


_NOTES = {1: "one thread per pair, scalar loads",
          2: "grid-stride; a pair of the interleaved layout as one float2"}
LADDERS = tuple(
    Ladder(op, "cuda",
           tuple(Rung(v, functools.partial(rotate, v, sign), _NOTES[v], fits=why_not)
                 for v in VERSIONS),
           DEFAULT_VERSION[op], about="rotary embedding of (B, H, T, D), FP32")
    for op, sign in (("rope_forward", 1.0), ("rope_backward", -1.0))
)
