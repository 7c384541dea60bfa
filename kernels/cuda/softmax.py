"""Launchers for kernels/cuda/softmax.cu: softmax and log-softmax over the last axis, forward
v1..v3 and backward v1..v2 (see its header).

The rungs take (..., V) arrays of any rank (seen as (N, V) rows), float32 only; the registry
sends other dtypes to kernels/reference.py on CuPy. The default forward is v2 (a warp per row)
for rows up to LONG_ROW and v3 (a block per row) beyond (``also``). The table is ``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "softmax.cu"
DEFINES = dict(SM_WARPS=8, SM_THREADS=512)
CONFIGS = [(FILE, DEFINES), (FILE, dict(SM_WARPS=4, SM_THREADS=256))]
OPS = ("softmax_forward", "log_softmax_forward", "softmax_backward", "log_softmax_backward")
_VERSIONS = {"softmax_forward": (1, 2, 3), "log_softmax_forward": (1, 2, 3),
            "softmax_backward": (1, 2), "log_softmax_backward": (1, 2)}  # kernels in the .cu
LONG_ROW = 4096  # beyond this many columns a row gets a whole block (v3)


def kernel_names(defines):
    return [f"{op}_v{v}" for op in OPS for v in _VERSIONS[op]]


def fits(*arrays):
    """float32 CuPy arrays of rank >= 1"""
    for a in arrays:
        if not (cc.is_cupy(a) and a.ndim >= 1 and cc.dtype_name(a) == "float32"):
            return f"{cc.dtype_name(a)} rank-{a.ndim} input"
    return None


def fits_warp_row(*arrays):
    """float32 rows of at most LONG_ROW = 4096"""
    return fits(*arrays) or (f"rows of {arrays[0].shape[-1]} > {LONG_ROW}"
                             if arrays[0].shape[-1] > LONG_ROW else None)


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


def _version(op, version):
    def fn(*arrays):
        return run(op, version, *arrays)
    fn.__name__ = f"{op}_v{version}"
    return fn


_NOTES = {1: "one thread per row", 2: "one warp per row, shuffles", 3: "one block per row"}


def _ladder(op, default, also=()):
    long_rows = op.endswith("forward")  # forward v2 hands rows over LONG_ROW to v3
    return Ladder(op, "cuda", default=default, also=also, rungs=tuple(
        Rung(v, _version(op, v), _NOTES[v], fits_warp_row if v == 2 and long_rows else fits)
        for v in _VERSIONS[op]))


LADDERS = (
    _ladder("softmax_forward", 2, also=(3,)),
    _ladder("log_softmax_forward", 2, also=(3,)),
    _ladder("softmax_backward", 2),
    _ladder("log_softmax_backward", 2),
)
