"""Launchers for kernels/cuda/layernorm.cu (forward v1..v3, backward v1..v2; see its header).

``layernorm_forward(x, w, b, eps)`` and ``layernorm_backward(dy, x, w, mean, rstd)`` have the
signatures of kernels/reference.py. float32 (N, C) inputs run the CUDA kernels (the newest
version that takes the row length); any other dtype goes to the reference, which runs on CuPy.
w / b of None are passed as ones / zeros (a C-vector: not worth a separate compiled variant).
"""

from . import _compile as cc

FILE = "layernorm.cu"
LN_WARPS = 8  # 256 threads per block
# LN_J buckets: a row of C floats needs ceil(C / 32) columns per lane; the kernel is compiled
# for the smallest bucket that holds it (C = 768 -> 24). Rows longer than 32 * 32 = 1024 take
# forward v2 and backward v1, which have no limit.
J_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32)
CONFIGS = [(FILE, dict(LN_WARPS=LN_WARPS, LN_J=j)) for j in J_BUCKETS]
VERSIONS = {"layernorm_forward": (1, 2, 3), "layernorm_backward": (1, 2)}
DEFAULT_VERSION = {"layernorm_forward": 3, "layernorm_backward": 2}
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


def fits(x):
    return cc.is_cupy(x) and x.ndim == 2 and cc.dtype_name(x) == "float32"


def supported(op, version, C):
    """Whether ``version`` of ``op`` takes rows of length C (register versions have a limit)."""
    if op == "layernorm_forward" and version == 3 or op == "layernorm_backward" and version == 2:
        return C <= MAX_C_REGISTERS
    return True


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


# --------------------------------------------------------------------------- reference API
def layernorm_forward(x, w, b, eps=1e-5):
    if not fits(x):
        from .. import reference

        return reference.layernorm_forward(x, w, b, eps)
    v = DEFAULT_VERSION["layernorm_forward"]
    return forward(v if supported("layernorm_forward", v, x.shape[1]) else 2, x, w, b, eps)


def layernorm_backward(dy, x, w, mean, rstd):
    if not (fits(x) and fits(dy) and cc.dtype_name(mean) == "float32"):
        from .. import reference

        return reference.layernorm_backward(dy, x, w, mean, rstd)
    v = DEFAULT_VERSION["layernorm_backward"]
    return backward(
        v if supported("layernorm_backward", v, x.shape[1]) else 1, dy, x, w, mean, rstd
    )
