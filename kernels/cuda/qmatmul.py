"""Launchers for kernels/cuda/qmatmul.cu: y = x W^T and dx = dy W with W in Q8_0/Q4_0/Q4_1
blocks, decoded inside the product (forward and backward_input v1..v2; see the .cu header).

The rungs have the signatures of kernels/reference.py ``qmatmul_forward(x, qw)`` and
``qmatmul_backward_input(dy, qw)``: x, dy float32 CuPy arrays (N, K) / (N, O), qw a
kernels.quant.QuantWeight. Its blocks may be a CuPy array already, or NumPy (a model loaded on
the CPU whose activations run on the GPU): then they are copied to the device once per
QuantWeight and kept while it lives. v2 (tiles) is the default and takes 16 rows or more; fewer
rows (decoding) run v1 (the ladder's ``also``), and other formats or dtypes the reference. One
module is compiled per format (QM_TYPE). The table is ``LADDERS``.
"""

import weakref

from ..ladder import Ladder, Rung
from ..quant import MATMUL_TYPES, Q4_0, Q4_1, Q8_0
from . import _compile as cc

FILE = "qmatmul.cu"
WARPS, TILE = 4, 64
MIN_TILED_ROWS = 16  # below this the tiles are mostly empty: the matrix-vector v1 (not measured)
CONFIGS = [(FILE, dict(QM_TYPE=t, QM_WARPS=WARPS, QM_TILE=TILE)) for t in (Q8_0, Q4_0, Q4_1)]
KERNELS = ("qmatmul_forward_v1", "qmatmul_forward_v2", "qmatmul_backward_input_v1",
           "qmatmul_backward_input_v2")


def kernel_names(defines):
    return list(KERNELS)


def _fn(name, qtype):
    return cc.function(FILE, name, dict(QM_TYPE=int(qtype), QM_WARPS=WARPS, QM_TILE=TILE))


_blocks_on_device = {}  # id(QuantWeight) -> (weakref to it, its blocks as a CuPy array)


def device_blocks(qw):
    """qw.blocks on the GPU: the array itself when it is there, else a copy made once."""
    if cc.is_cupy(qw.blocks):
        return qw.blocks
    key = id(qw)
    entry = _blocks_on_device.get(key)
    if entry is None or entry[0]() is not qw:
        import cupy as cp

        ref = weakref.ref(qw, lambda _: _blocks_on_device.pop(key, None))
        entry = _blocks_on_device[key] = (ref, cp.ascontiguousarray(cp.asarray(qw.blocks)))
    return entry[1]


def _fits(a, qw, rows):
    if not cc.is_cupy(a):
        return "not a CuPy array"
    if cc.dtype_name(a) != "float32":
        return f"{cc.dtype_name(a)} input"
    if getattr(qw, "qtype", None) not in MATMUL_TYPES:
        return "weights not in Q8_0, Q4_0 or Q4_1 blocks"
    O, K = qw.shape
    if a.ndim != 2 or a.shape[1] != rows(O, K):
        return "input of the wrong shape"
    if max(a.size, a.shape[0] * O, a.shape[0] * K) >= 2**31:
        return "2^31 elements or more"
    return None


def fits_forward_v1(x, qw):
    """float32 x (N, K), Q8_0/Q4_0/Q4_1 weights"""
    return _fits(x, qw, lambda O, K: K)


def fits_forward_v2(x, qw):
    """float32 x (N, K) with N >= 16, Q8_0/Q4_0/Q4_1 weights"""
    return fits_forward_v1(x, qw) or (
        f"fewer than {MIN_TILED_ROWS} rows" if x.shape[0] < MIN_TILED_ROWS else None)


def fits_backward_v1(dy, qw):
    """float32 dy (N, O), Q8_0/Q4_0/Q4_1 weights"""
    return _fits(dy, qw, lambda O, K: O)


def fits_backward_v2(dy, qw):
    """float32 dy (N, O) with N >= 16, Q8_0/Q4_0/Q4_1 weights"""
    return fits_backward_v1(dy, qw) or (
        f"fewer than {MIN_TILED_ROWS} rows" if dy.shape[0] < MIN_TILED_ROWS else None)


def forward(version, x, qw):
    import cupy as cp

    x, w = cc.contiguous(x), device_blocks(qw)
    N, (O, K) = x.shape[0], qw.shape
    y = cp.empty((N, O), dtype=cp.float32)
    if version == 1:
        grid = (cc.ceil_div(O, WARPS), min(N, 65535))
        cc.launch(_fn("qmatmul_forward_v1", qw.qtype), grid, 32 * WARPS, (y, x, w, N, O, K))
    else:
        grid = (cc.ceil_div(O, TILE), cc.ceil_div(N, TILE))
        cc.launch(_fn("qmatmul_forward_v2", qw.qtype), grid, (TILE // 4) ** 2, (y, x, w, N, O, K))
    return y


def backward_input(version, dy, qw):
    import cupy as cp

    dy, w = cc.contiguous(dy), device_blocks(qw)
    N, (O, K) = dy.shape[0], qw.shape
    dx = cp.empty((N, K), dtype=cp.float32)
    if version == 1:
        grid = (cc.ceil_div(K, 32 * WARPS), min(N, 65535))
        cc.launch(_fn("qmatmul_backward_input_v1", qw.qtype), grid, 32 * WARPS,
                  (dx, dy, w, N, O, K))
    else:
        grid = (cc.ceil_div(K, TILE), cc.ceil_div(N, TILE))
        cc.launch(_fn("qmatmul_backward_input_v2", qw.qtype), grid, (TILE // 4) ** 2,
                  (dx, dy, w, N, O, K))
    return dx


# --------------------------------------------------------------------------- ladders
def _forward_v(version):
    def fn(x, qw):
        return forward(version, x, qw)
    fn.__name__ = f"qmatmul_forward_v{version}"
    return fn


def _backward_v(version):
    def fn(dy, qw):
        return backward_input(version, dy, qw)
    fn.__name__ = f"qmatmul_backward_input_v{version}"
    return fn


LADDERS = (
    Ladder("qmatmul_forward", "cuda", default=2, also=(1,),
           about="y = x W^T with W in Q8_0/Q4_0/Q4_1 blocks decoded in the product, FP32", rungs=(
        Rung(1, _forward_v(1), "one warp per (row, output), a lane per block, shuffle sum",
             fits_forward_v1),
        Rung(2, _forward_v(2), "64x64 output tiles, W's slice decoded once into shared memory",
             fits_forward_v2),
    )),
    Ladder("qmatmul_backward_input", "cuda", default=2, also=(1,),
           about="dx = dy W for a frozen quantized W (LoRA on a quantized base), FP32", rungs=(
        Rung(1, _backward_v(1), "one thread per dx element, a loop over W's rows",
             fits_backward_v1),
        Rung(2, _backward_v(2), "64x64 dx tiles, W's slice decoded once into shared memory",
             fits_backward_v2),
    )),
)
