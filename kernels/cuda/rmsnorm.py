"""Launchers for kernels/cuda/rmsnorm.cu (forward v1..v2, backward v1..v2; see its header).

The rungs have the signatures of kernels/reference.py ``rms_norm_forward(x, w, eps) -> (y,
rrms)`` and ``rms_norm_backward(dy, x, w, rrms) -> (dx, dw)``. They take float32 (N, C) CuPy
inputs (their ``fits``); anything else runs the reference, which runs on CuPy too. The table is
``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "rmsnorm.cu"
DEFINES = dict(RN_WARPS=8, RN_ROWS=8)
CONFIGS = [(FILE, DEFINES)]
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


def _float32(*arrays):
    """None when every array is a float32 CuPy array and the first is (N, C), else why not."""
    for a in arrays:
        if not cc.is_cupy(a):
            return "not a CuPy array"
        if cc.dtype_name(a) != "float32":
            return f"{cc.dtype_name(a)} input"
    if arrays[0].ndim != 2:
        return f"x of {arrays[0].ndim} dims, not (N, C)"
    return None


def fits_forward(x, w, eps=1e-5):
    """float32 (N, C) x and float32 w"""
    return _float32(x, w)


def fits_backward(dy, x, w, rrms):
    """float32 (N, C) x, dy and float32 w, rrms"""
    return _float32(x, dy, w, rrms)


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


# --------------------------------------------------------------------------- ladders
def _forward_v(version):
    def fn(x, w, eps=1e-5):
        return forward(version, x, w, eps)
    fn.__name__ = f"rms_norm_forward_v{version}"
    return fn


def _backward_v(version):
    def fn(dy, x, w, rrms):
        return backward(version, dy, x, w, rrms)
    fn.__name__ = f"rms_norm_backward_v{version}"
    return fn


LADDERS = (
    Ladder("rms_norm_forward", "cuda", default=2, about="RMSNorm over rows (N, C), FP32", rungs=(
        Rung(1, _forward_v(1), "one thread per row (uncoalesced)", fits_forward),
        Rung(2, _forward_v(2), "one warp per row, coalesced loads, shuffle sum", fits_forward),
    )),
    Ladder("rms_norm_backward", "cuda", default=2, about="RMSNorm backward, FP32", rungs=(
        Rung(1, _backward_v(1), "dx one thread per row, dw one thread per column", fits_backward),
        Rung(2, _backward_v(2), "dx one warp per row; dw block partials, fixed-order sum",
             fits_backward),
    )),
)
