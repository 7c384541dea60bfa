"""Launchers for kernels/cuda/softmax.cu: softmax and log-softmax over the last axis, forward
v1..v3 and backward v1..v2 (see its header).

The reference-signature functions take (..., V) arrays of any rank (seen as (N, V) rows).
float32 runs the CUDA kernels; other dtypes go to kernels/reference.py on CuPy. The default
forward is v2 (a warp per row) for rows up to LONG_ROW and v3 (a block per row) beyond.
"""

from . import _compile as cc

FILE = "softmax.cu"
DEFINES = dict(SM_WARPS=8, SM_THREADS=512)
CONFIGS = [(FILE, DEFINES), (FILE, dict(SM_WARPS=4, SM_THREADS=256))]
OPS = ("softmax_forward", "log_softmax_forward", "softmax_backward", "log_softmax_backward")
VERSIONS = {
    "softmax_forward": (1, 2, 3),
    "log_softmax_forward": (1, 2, 3),
    "softmax_backward": (1, 2),
    "log_softmax_backward": (1, 2),
}
LONG_ROW = 4096


def kernel_names(defines):
    return [f"{op}_v{v}" for op in OPS for v in VERSIONS[op]]


# beyond this many columns a row gets a whole block (v3)


def fits(*arrays):
    return all(cc.is_cupy(a) and a.ndim >= 1 and cc.dtype_name(a) == "float32" for a in arrays)


def _launch(name, version, N, args):
    fn = cc.function(FILE, f"{name}_v{version}", DEFINES)
    if version == 1:
        cc.launch(fn, cc.ceil_div(N, 128), 128, args)
    elif version == 2:
        cc.launch(fn, cc.ceil_div(N, DEFINES["SM_WARPS"]), DEFINES["SM_WARPS"] * 32, args)
    else:
        cc.launch(fn, N, DEFINES["SM_THREADS"], args)


def run(op, version, *arrays):
    """One of OPS with kernel ``version``. Forward: (x,) -> y; backward: (dy, y) -> dx."""
    import cupy as cp

    arrays = [cc.contiguous(a) for a in arrays]
    shape = arrays[0].shape
    V = shape[-1] if shape else 1
    N = arrays[0].size // max(V, 1)
    out = cp.empty(shape, cp.float32)
    if N == 0 or V == 0:
        return out
    rows = [a.reshape(N, V) for a in arrays]
    _launch(op, version, N, (out.reshape(N, V), *rows, N, V))
    return out


def _default(op, V):
    if op.endswith("backward"):
        return 2
    return 3 if V > LONG_ROW else 2


def _call(op, *arrays):
    if not fits(*arrays) or arrays[0].ndim == 0:
        from .. import reference

        return getattr(reference, op)(*arrays)
    return run(op, _default(op, arrays[0].shape[-1]), *arrays)


def softmax_forward(x):
    """y = softmax(x) over the last axis (kernels.reference.softmax_forward)."""
    return _call("softmax_forward", x)


def softmax_backward(dy, y):
    """dx = y (dy - sum(dy y)) (kernels.reference.softmax_backward)."""
    return _call("softmax_backward", dy, y)


def log_softmax_forward(x):
    """y = x - logsumexp(x) over the last axis (kernels.reference.log_softmax_forward)."""
    return _call("log_softmax_forward", x)


def log_softmax_backward(dy, y):
    """dx = dy - exp(y) sum(dy) (kernels.reference.log_softmax_backward)."""
    return _call("log_softmax_backward", dy, y)
