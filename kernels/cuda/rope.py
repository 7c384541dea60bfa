"""Launchers for kernels/cuda/rope.cu (v1..v2, one kernel for both directions; see its header).

The rungs have the signatures of kernels/reference.py ``rope_forward(x, cos, sin,
interleaved)`` and ``rope_backward(dy, cos, sin, interleaved)``: x (B, H, T, D), cos/sin
(T, D/2) or (B, T, D/2). They take float32 CuPy inputs with fewer than 2^31 pairs (their
``fits``); anything else runs the reference, which runs on CuPy too. The table is ``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "rope.cu"
DEFINES = dict(RP_THREADS=256)
CONFIGS = [(FILE, DEFINES)]


def kernel_names(defines):
    return ["rope_rotate_v1", "rope_rotate_v2"]


def _fn(name):
    return cc.function(FILE, name, DEFINES)


def fits(x, cos, sin, interleaved=False):
    """float32 (B, H, T, D) x with D even, (T, D/2) or (B, T, D/2) cos/sin, < 2^31 pairs"""
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


# --------------------------------------------------------------------------- ladders
def _rotate_v(version, sign, op):
    def fn(x, cos, sin, interleaved=False):
        return rotate(version, sign, x, cos, sin, interleaved)
    fn.__name__ = f"{op}_v{version}"
    return fn


LADDERS = tuple(
    Ladder(op, "cuda", default=2, about="rotary embedding of (B, H, T, D), FP32", rungs=(
        Rung(1, _rotate_v(1, sign, op), "one thread per pair, scalar loads", fits),
        Rung(2, _rotate_v(2, sign, op),
             "grid-stride; a pair of the interleaved layout as one float2", fits),
    ))
    for op, sign in (("rope_forward", 1.0), ("rope_backward", -1.0))
)
