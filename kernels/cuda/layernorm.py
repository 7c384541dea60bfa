"""Launchers for kernels/cuda/layernorm.cu (forward v1..v3, backward v1..v2; see its header).

The rungs have the signatures of kernels/reference.py ``layernorm_forward(x, w, b, eps)`` and
``layernorm_backward(dy, x, w, mean, rstd)`` and take float32 (N, C) inputs; the register
versions (forward v3, backward v2, the defaults) take rows of at most MAX_C_REGISTERS, longer
rows run forward v2 / backward v1 (``also``), other dtypes the reference on CuPy. w / b of None
are passed as ones / zeros (a C-vector: not worth a separate compiled variant). The table is
``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "layernorm.cu"
LN_WARPS = 8  # 256 threads per block
# LN_J buckets: a row of C floats needs ceil(C / 32) columns per lane; the kernel is compiled
# for the smallest bucket that holds it (C = 768 -> 24). Rows longer than 32 * 32 = 1024 take
# forward v2 and backward v1, which have no limit.
J_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32)
CONFIGS = [(FILE, dict(LN_WARPS=LN_WARPS, LN_J=j)) for j in J_BUCKETS]
MAX_C_REGISTERS = 32 * J_BUCKETS[-1]
KERNELS = (
    "layernorm_forward_v1",
    "layernorm_forward_v2",
    "layernorm_forward_v3",
    "layernorm_backward_dx_v1",
    "layernorm_backward_dwdb_v1",
    "layernorm_backward_v2",
    "layernorm_colsum",
)


def kernel_names(defines):
    return list(KERNELS)


def _j_for(C):
    need = cc.ceil_div(C, 32)
    for j in J_BUCKETS:
        if j >= need:
            return j
    return None


def _fn(name, C):
    j = _j_for(C) or J_BUCKETS[0]  # v1/v2-forward kernels do not use LN_J; any bucket works
    return cc.function(FILE, name, dict(LN_WARPS=LN_WARPS, LN_J=j))


def _float32_rows(x):
    if not (cc.is_cupy(x) and x.ndim == 2 and cc.dtype_name(x) == "float32"):
        return f"{cc.dtype_name(x)} rank-{x.ndim} input"
    return None


def fits_forward(x, w, b, eps=1e-5):
    """float32 (N, C) x"""
    return _float32_rows(x)


def fits_backward(dy, x, w, mean, rstd):
    """float32 (N, C) dy, x and float32 mean, rstd"""
    return _float32_rows(x) or _float32_rows(dy) or (
        None if cc.dtype_name(mean) == "float32" else f"{cc.dtype_name(mean)} mean")


def _registers(fits):
    def fits_registers(*args):
        reason = fits(*args)
        if reason is not None:
            return reason
        C = args[0].shape[1] if fits is fits_forward else args[1].shape[1]
        return f"rows of {C} > {MAX_C_REGISTERS}" if C > MAX_C_REGISTERS else None
    fits_registers.__doc__ = f"{fits.__doc__}, C <= {MAX_C_REGISTERS}"
    return fits_registers


def _vec(a, C, fill, cp):
    if a is None:
        return cp.full((C,), fill, dtype=cp.float32)
    return cc.contiguous(a.astype(cp.float32, copy=False))


def forward(version, x, w, b, eps):
    """y, mean, rstd with layernorm.cu forward ``version``.  x: (N, C) float32."""
    import cupy as cp

    x = cc.contiguous(x)
    N, C = x.shape
    w_, b_ = _vec(w, C, 1.0, cp), _vec(b, C, 0.0, cp)
    y = cp.empty_like(x)
    mean = cp.empty((N,), cp.float32)
    rstd = cp.empty((N,), cp.float32)
    if N == 0:
        return y, mean, rstd
    args = (y, mean, rstd, x, w_, b_, N, C, float(eps))
    fn = _fn(f"layernorm_forward_v{version}", C)
    if version == 1:
        cc.launch(fn, cc.ceil_div(N, 128), 128, args)
    else:
        cc.launch(fn, cc.ceil_div(N, LN_WARPS), LN_WARPS * 32, args)
    return y, mean, rstd


def _grid_bwd(N):
    import cupy as cp

    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    return max(1, min(cc.ceil_div(N, LN_WARPS), 2 * sms))


def backward(version, dy, x, w, mean, rstd):
    """dx, dw, db with layernorm.cu backward ``version``; dw is None when w is None."""
    import cupy as cp

    dy, x = cc.contiguous(dy), cc.contiguous(x)
    N, C = x.shape
    w_ = _vec(w, C, 1.0, cp)
    mean, rstd = cc.contiguous(mean), cc.contiguous(rstd)
    dx = cp.empty_like(x)
    dw = cp.zeros((C,), cp.float32)
    db = cp.zeros((C,), cp.float32)
    if N > 0:
        if version == 1:
            cc.launch(
                _fn("layernorm_backward_dx_v1", C),
                cc.ceil_div(N, 128),
                128,
                (dx, dy, x, w_, mean, rstd, N, C),
            )
            cc.launch(
                _fn("layernorm_backward_dwdb_v1", C),
                cc.ceil_div(C, 128),
                128,
                (dw, db, dy, x, mean, rstd, N, C),
            )
        else:
            G = _grid_bwd(N)
            pdw = cp.empty((G, C), cp.float32)
            pdb = cp.empty((G, C), cp.float32)
            cc.launch(
                _fn("layernorm_backward_v2", C),
                G,
                LN_WARPS * 32,
                (dx, pdw, pdb, dy, x, w_, mean, rstd, N, C),
            )
            cc.launch(
                _fn("layernorm_colsum", C), cc.ceil_div(C, 128), 128, (dw, db, pdw, pdb, G, C)
            )
    return dx, (dw if w is not None else None), db


# --------------------------------------------------------------------------- ladders
def _forward_v(version):
    def fn(x, w, b, eps=1e-5):
        return forward(version, x, w, b, eps)
    fn.__name__ = f"layernorm_forward_v{version}"
    return fn


def _backward_v(version):
    def fn(dy, x, w, mean, rstd):
        return backward(version, dy, x, w, mean, rstd)
    fn.__name__ = f"layernorm_backward_v{version}"
    return fn


LADDERS = (
    Ladder("layernorm_forward", "cuda", default=3, also=(2,), rungs=(
        Rung(1, _forward_v(1), "one thread per row", fits_forward),
        Rung(2, _forward_v(2), "one warp per row, shuffle reductions", fits_forward),
        Rung(3, _forward_v(3), "the row held in registers, one read of x",
             _registers(fits_forward)),
    )),
    Ladder("layernorm_backward", "cuda", default=2, also=(1,), rungs=(
        Rung(1, _backward_v(1), "dx per row, then dw/db per column", fits_backward),
        Rung(2, _backward_v(2), "warp per row in registers, partial dw/db per block",
             _registers(fits_backward)),
    )),
)
