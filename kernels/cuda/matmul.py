"""Launchers for kernels/cuda/matmul.cu (the FP32 SGEMM ladder, v1..v6; see its header).

``LADDERS``: v1..v6 take 2-D float32 (M, K) @ (K, N) CuPy arrays; v7, the default, is cuBLAS
through ``a @ b`` (any dtype, batch dims and broadcasting), the fair default until a GPU run
measures one of the hand-written versions faster. The fused epilogues ``matmul_bias(a, b, bias,
version=5)`` / ``matmul_bias_gelu(...)`` (v5: FP32, v6: TF32) take the same inputs; anything
else goes to cuBLAS + the reference epilogue, never to a kernel that does not fit it.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "matmul.cu"

# Placeholder values per version (the compile test builds each of these, and the benchmark can
# sweep others). The comment says the block tile and the threads per block.
DEFINES = {
    1: dict(VERSION=1, BX=32, BY=8),  # 32 x 8 outputs, 256 threads
    2: dict(VERSION=2, TILE=32),  # 32 x 32 tile, 1024 threads
    3: dict(VERSION=3, BM=128, BN=128, BK=8, TM=8, TN=8),  # 128 x 128, 256 threads
    4: dict(VERSION=4, BM=128, BN=128, BK=16, TM=8, TN=8),  # 128 x 128, 256 threads
    5: dict(VERSION=5, BM=128, BN=128, BK=16, WM=64, WN=64, WMITER=2, WNITER=2, TM=8, TN=4),
    6: dict(VERSION=6, BM=128, BN=128, BK=32, WARPS_M=2, WARPS_N=4),  # TF32, 256 threads
}
# Alternative tilings the compile test also builds (so a benchmark sweep cannot hit a broken
# one): smaller tiles for small or skinny matrices.
EXTRA_DEFINES = [
    dict(VERSION=3, BM=64, BN=64, BK=8, TM=4, TN=4),
    dict(VERSION=5, BM=64, BN=128, BK=16, WM=32, WN=64, WMITER=1, WNITER=4, TM=4, TN=4),
    dict(VERSION=6, BM=64, BN=128, BK=32, WARPS_M=2, WARPS_N=2),
]
CONFIGS = [(FILE, d) for d in DEFINES.values()] + [(FILE, d) for d in EXTRA_DEFINES]
TF32_VERSIONS = (6,)


def kernel_names(defines):
    """The extern "C" kernels a module built with ``defines`` must hold (compile test)."""
    v = defines["VERSION"]
    if v in EPILOGUE_VERSIONS:
        return [f"matmul_v{v}", f"matmul_bias_v{v}", f"matmul_bias_gelu_v{v}"]
    return [f"matmul_v{v}"]


# tested with the TF32 tolerance
EPILOGUE_VERSIONS = (5, 6)


def cublas(a, b):
    """out = a @ b on the GPU: cuBLAS (the default until a hand-written version beats it)."""
    return a @ b


def _threads(d):
    v = d["VERSION"]
    if v == 1:
        return d["BX"] * d["BY"]
    if v == 2:
        return d["TILE"] ** 2
    if v in (3, 4):
        return (d["BM"] // d["TM"]) * (d["BN"] // d["TN"])
    if v == 5:
        return (d["BM"] // d["WM"]) * (d["BN"] // d["WN"]) * 32
    return d["WARPS_M"] * d["WARPS_N"] * 32


def fits(a, b):
    """2-D float32 (M, K) @ (K, N)"""
    return None if _fits(a, b) else f"{cc.dtype_name(a)} {a.shape} @ {cc.dtype_name(b)} {b.shape}"


def _fits(a, b):
    return (
        cc.is_cupy(a)
        and cc.is_cupy(b)
        and a.ndim == 2
        and b.ndim == 2
        and a.shape[1] == b.shape[0]
        and cc.dtype_name(a) == "float32"
        and cc.dtype_name(b) == "float32"
    )


def run(version, a, b, bias=None, gelu=False, defines=None, out=None):
    """C = a @ b (+ bias) (gelu) with matmul.cu version ``version``.

    a: (M, K) float32, b: (K, N) float32, bias: (N,) float32 or None. ``defines`` overrides the
    block sizes (benchmark sweeps); ``out`` an (M, N) float32 buffer to write into.
    """
    import cupy as cp

    if not _fits(a, b):
        raise ValueError("matmul.cu takes 2-D float32 (M, K) @ (K, N) CuPy arrays")
    if (bias is not None or gelu) and version not in EPILOGUE_VERSIONS:
        raise ValueError(f"fused epilogues exist in versions {EPILOGUE_VERSIONS}, not v{version}")
    if gelu and bias is None:
        raise ValueError("the GELU epilogue is fused with a bias (matmul_bias_gelu)")
    d = dict(DEFINES[version]) if defines is None else dict(defines)
    d["VERSION"] = version
    a, b = cc.contiguous(a), cc.contiguous(b)
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = cp.empty((M, N), dtype=cp.float32)
    if M == 0 or N == 0:
        return out
    if K == 0:
        out.fill(0)
        return out if bias is None else _ref_epilogue(out, bias, gelu)
    name = (
        "matmul" + ("_bias_gelu" if gelu else "_bias" if bias is not None else "") + f"_v{version}"
    )
    args = [out, a, b]
    if bias is not None:
        bias = cc.contiguous(bias.astype(cp.float32, copy=False))
        args.append(bias)
    args += [M, N, K]
    vec_a = K % 4 == 0 and cc.aligned16(a)
    vec_b = N % 4 == 0 and cc.aligned16(b)
    vec_c = N % 4 == 0 and cc.aligned16(out)
    if version in (4, 5):
        args += [vec_a, vec_b, vec_c]
    elif version == 6:
        args += [vec_a, vec_b]
    if version == 1:
        grid, block = (cc.ceil_div(N, d["BX"]), cc.ceil_div(M, d["BY"])), (d["BX"], d["BY"])
    elif version == 2:
        grid, block = (cc.ceil_div(N, d["TILE"]), cc.ceil_div(M, d["TILE"])), (d["TILE"], d["TILE"])
    else:
        grid, block = (cc.ceil_div(N, d["BN"]), cc.ceil_div(M, d["BM"])), (_threads(d),)
    cc.launch(cc.function(FILE, name, d), grid, block, args)
    return out


def _ref_epilogue(y, bias, gelu):
    from .. import reference

    return reference.bias_gelu_forward(y, bias) if gelu else y + bias


def matmul_v1(a, b):
    return run(1, a, b)


def matmul_v2(a, b):
    return run(2, a, b)


def matmul_v3(a, b):
    return run(3, a, b)


def matmul_v4(a, b):
    return run(4, a, b)


def matmul_v5(a, b):
    return run(5, a, b)


def matmul_v6(a, b):
    """TF32 tensor cores: about 3 significant digits per product (see the tests' tolerance)."""
    return run(6, a, b)


def matmul_bias(a, b, bias, version=5):
    """a @ b + bias with the bias add fused into the store (v5 FP32, v6 TF32); other inputs go
    to cuBLAS + a separate add."""
    if _fits(a, b) and cc.dtype_name(bias) == "float32":
        return run(version, a, b, bias=bias)
    return a @ b + bias


def matmul_bias_gelu(a, b, bias, version=5):
    """gelu(a @ b + bias), the MLP's first layer, with bias and GELU fused into the store."""
    if _fits(a, b) and cc.dtype_name(bias) == "float32":
        return run(version, a, b, bias=bias, gelu=True)
    return _ref_epilogue(a @ b, bias, True)


LADDERS = (
    Ladder("matmul", "cuda", default=7, about="SGEMM: tiling, register blocks, tensor cores",
           rungs=(
        Rung(1, matmul_v1, "naive: one thread per output, K-loop from global memory", fits),
        Rung(2, matmul_v2, "shared-memory tiles", fits),
        Rung(3, matmul_v3, "2-D register blocking, TM x TN per thread", fits),
        Rung(4, matmul_v4, "v3 + float4 global and shared loads", fits),
        Rung(5, matmul_v5, "warp tiling", fits),
        Rung(6, matmul_v6, "TF32 tensor cores (mma.sync), about 3 significant digits", fits),
        Rung(7, cublas, "cuBLAS through a @ b: any dtype, batches, broadcasting"),
    )),
)
