"""Launchers for kernels/cuda/rmsnorm.cu (forward v1..v2, backward v1..v2; see its header).

``rms_norm_forward(x, w, eps) -> (y, rrms)`` and ``rms_norm_backward(dy, x, w, rrms) ->
(dx, dw)`` have the signatures of kernels/reference.py. float32 (N, C) inputs run the CUDA
kernels; anything else goes to the reference, which runs on CuPy too.
"""

import functools

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "rmsnorm.cu"
DEFINES = dict(RN_WARPS=8, RN_ROWS=8)
CONFIGS = [(FILE, DEFINES)]
VERSIONS = {"rms_norm_forward": (1, 2), "rms_norm_backward": (1, 2)}
DEFAULT_VERSION = {"rms_norm_forward": 2, "rms_norm_backward": 2}
KERNELS = (
    "rms_norm_forward_v1",
    "rms_norm_forward_v2",
    "rms_norm_backward_dx_v1",
    "rms_norm_backward_dw_v1",
    "rms_norm_backward_dx_v2",
    "rms_norm_backward_dw_v2",
    "rms_norm_colsum",
)


def kernel_names(defines):
    return list(KERNELS)


def _fn(name):
    return cc.function(FILE, name, DEFINES)


def why_not(*arrays):
    """None when the CUDA kernels take these arrays, else the reason (shown by describe())."""
    for a in arrays:
        if not cc.is_cupy(a):
            return "not a CuPy array"
        if cc.dtype_name(a) != "float32":
            return f"{cc.dtype_name(a)} input"
    if arrays[0].ndim != 2:
        return f"x of {arrays[0].ndim} dims, not (N, C)"
    return None


def forward(version, x, w, eps=1e-5):
    """y, rrms with rmsnorm.cu forward ``version``.  x: (N, C) float32."""
    import cupy as cp

    x, w = cc.contiguous(x), cc.contiguous(w.astype(cp.float32, copy=False))
    N, C = x.shape
    y = cp.empty_like(x)
    rrms = cp.empty((N,), cp.float32)
    args = (y, rrms, x, w, N, C, float(eps))
    W = DEFINES["RN_WARPS"]
    if version == 1:
        cc.launch(_fn("rms_norm_forward_v1"), cc.ceil_div(N, 128), 128, args)
    else:
        cc.launch(_fn("rms_norm_forward_v2"), cc.ceil_div(N, W), W * 32, args)
    return y, rrms


def backward(version, dy, x, w, rrms):
    """dx, dw with rmsnorm.cu backward ``version``."""
    import cupy as cp

    dy, x = cc.contiguous(dy), cc.contiguous(x)
    w, rrms = cc.contiguous(w.astype(cp.float32, copy=False)), cc.contiguous(rrms)
    N, C = x.shape
    dx = cp.empty_like(x)
    dw = cp.zeros((C,), cp.float32)
    if N == 0 or C == 0:
        return dx, dw
    if version == 1:
        cc.launch(_fn("rms_norm_backward_dx_v1"), cc.ceil_div(N, 128), 128,
                  (dx, dy, x, w, rrms, N, C))
        cc.launch(_fn("rms_norm_backward_dw_v1"), cc.ceil_div(C, 128), 128, (dw, dy, x, rrms, N, C))
        return dx, dw
    W, R = DEFINES["RN_WARPS"], DEFINES["RN_ROWS"]
    cc.launch(_fn("rms_norm_backward_dx_v2"), cc.ceil_div(N, W), W * 32, (dx, dy, x, w, rrms, N, C))
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    col_blocks = cc.ceil_div(C, 32)
    # enough row groups to give every SM a few blocks; each group writes one partial row
    G = max(1, min(cc.ceil_div(N, R), cc.ceil_div(4 * sms, col_blocks)))
    partial = cp.empty((G, C), cp.float32)
    cc.launch(_fn("rms_norm_backward_dw_v2"), (col_blocks, G), (32, R),
              (partial, dy, x, rrms, N, C))
    cc.launch(_fn("rms_norm_colsum"), cc.ceil_div(C, 128), 128, (dw, partial, G, C))
    return dx, dw


# --------------------------------------------------------------------------- reference API
def rms_norm_forward(x, w, eps=1e-5):
    if why_not(x, w):
        from .. import reference

        return reference.rms_norm_forward(x, w, eps)
    return forward(DEFAULT_VERSION["rms_norm_forward"], x, w, eps)


def rms_norm_backward(dy, x, w, rrms):
    if why_not(x, dy, w, rrms):
        from .. import reference

        return reference.rms_norm_backward(dy, x, w, rrms)
    return backward(DEFAULT_VERSION["rms_norm_backward"], dy, x, w, rrms)


_NOTES = {
    ("rms_norm_forward", 1): "one thread per row (uncoalesced)",
    ("rms_norm_forward", 2): "one warp per row, coalesced loads, shuffle sum",
    ("rms_norm_backward", 1): "dx one thread per row, dw one thread per column",
    ("rms_norm_backward", 2): "dx one warp per row; dw block partials, fixed-order sum",
}
LADDERS = (
    Ladder("rms_norm_forward", "cuda",
           tuple(Rung(v, functools.partial(forward, v), _NOTES["rms_norm_forward", v],
                      fits=lambda x, w, eps=1e-5: why_not(x, w))
                 for v in VERSIONS["rms_norm_forward"]),
           DEFAULT_VERSION["rms_norm_forward"], about="RMSNorm over rows (N, C), FP32"),
    Ladder("rms_norm_backward", "cuda",
           tuple(Rung(v, functools.partial(backward, v), _NOTES["rms_norm_backward", v],
                      fits=lambda dy, x, w, rrms: why_not(x, dy, w, rrms))
                 for v in VERSIONS["rms_norm_backward"]),
           DEFAULT_VERSION["rms_norm_backward"], about="RMSNorm backward, FP32"),
)
