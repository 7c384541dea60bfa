"""Launchers for kernels/cuda/attention.cu: flash attention forward + backward, v1 (FP32) and v2
(FP16/BF16 on tensor cores), head dims 64 and 128 (see its header).

The rungs have the signatures of kernels/reference.py ``attention_forward(q, k, v, scale,
causal=True) -> (o, lse)`` and ``attention_backward(do, q, k, v, o, lse, scale, causal=True) ->
(dq, dk, dv)``, including Tq < Tk with the causal offset (query i at absolute position
Tk - Tq + i). Which inputs a rung takes (its ``fits``):
  float32 -> v1 (the default);  float16 or bfloat16 -> v2 (``also``; lse stays float32);
  head dim 64 or 128; q (B, H, Tq, D), k and v (B, H, Tk, D), Tq, Tk >= 1, B*H <= 65535.
Anything else (float64, another head dim, Tq > Tk with causal, ...) runs the reference, which
runs on CuPy and materialises the score matrix. The table is ``LADDERS``.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "attention.cu"
HEAD_DIMS = (64, 128)
V1 = dict(ATT_VERSION=1, ATT_WARPS=4, ATT_RPW=8)  # 128 threads, 32 rows per block
V2 = dict(ATT_VERSION=2, ATT_BQ=64, ATT_BK=64)  # 4 warps x 16 rows, 64-key tiles
CONFIGS = [(FILE, dict(V1, HEAD_DIM=d)) for d in HEAD_DIMS] + [
    (FILE, dict(V2, HEAD_DIM=d, ATT_BF16=bf)) for d in HEAD_DIMS for bf in (0, 1)
]
DTYPES = {1: ("float32",), 2: ("float16", "bfloat16")}  # what each version computes in


def kernel_names(defines):
    v = defines["ATT_VERSION"]
    return ["attention_delta"] + [
        f"{k}_v{v}"
        for k in ("attention_forward", "attention_backward_dkdv", "attention_backward_dq")
    ]


def defines(version, D, dtype_name):
    if version == 1:
        return dict(V1, HEAD_DIM=D)
    return dict(V2, HEAD_DIM=D, ATT_BF16=int(dtype_name == "bfloat16"))


# Dynamic shared memory in bytes, the same sums as the *_SMEM macros of attention.cu.
def smem_bytes(kernel, d):
    D = d["HEAD_DIM"]
    if d["ATT_VERSION"] == 1:
        BR, BC, PD = d["ATT_WARPS"] * d["ATT_RPW"], 32, D + 1
        floats = {
            "forward": BR * D + BC * PD + BC * D,
            "dkdv": 2 * BR * D + 2 * BC * PD + 2 * BC,
            "dq": 2 * BR * D + 2 * BC * PD,
        }[kernel]
        return 4 * floats
    BQ, BK, SD = d["ATT_BQ"], d["ATT_BK"], D + 8
    return {
        "forward": (BQ + 2 * BK) * SD * 2,
        "dkdv": 2 * (BQ + BK) * SD * 2 + 2 * BQ * 4,
        "dq": 2 * (BQ + BK) * SD * 2,
    }[kernel]


def _shapes_fit(q, k, v):
    if not all(cc.is_cupy(a) and a.ndim == 4 for a in (q, k, v)):
        return False
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    return (
        k.shape == v.shape
        and k.shape[:2] == (B, H)
        and k.shape[3] == D
        and D in HEAD_DIMS
        and Tq >= 1
        and Tk >= 1
        and 1 <= B * H <= 65535
    )


def _fits_qkv(version, q, k, v, causal):
    if not _shapes_fit(q, k, v):
        return f"shapes {q.shape} {k.shape} {v.shape} (head dim 64 or 128, B*H <= 65535)"
    if causal and q.shape[2] > k.shape[2]:
        return "causal with Tq > Tk"
    names = {cc.dtype_name(a) for a in (q, k, v)}
    if len(names) != 1 or names.pop() not in DTYPES[version]:
        return f"{cc.dtype_name(q)} input"
    return None


def _fits_forward(version):
    def fits(q, k, v, scale, causal=True):
        return _fits_qkv(version, q, k, v, causal)
    fits.__doc__ = f"{' or '.join(DTYPES[version])} q, k, v, head dim 64 or 128"
    return fits


def _fits_backward(version):
    def fits(do, q, k, v, o, lse, scale, causal=True):
        reason = _fits_qkv(version, q, k, v, causal)
        if reason is None and not (cc.is_cupy(do) and do.shape == q.shape == o.shape
                                   and cc.dtype_name(do) == cc.dtype_name(q) == cc.dtype_name(o)
                                   and cc.dtype_name(lse) == "float32"):
            reason = "do, o or lse do not match q"
        return reason
    fits.__doc__ = f"{' or '.join(DTYPES[version])} q, k, v, do, o, float32 lse, head dim 64/128"
    return fits


def _prep(*arrays):
    arrays = [cc.contiguous(a) for a in arrays]
    if not cc.aligned16(*arrays):  # uint4 staging needs 16-byte aligned bases: copy to fresh
        import cupy as cp

        arrays = [cp.array(a, copy=True) for a in arrays]
    return arrays


def _launch(kernel, version, d, grid, args):
    name = {
        "forward": "attention_forward",
        "dkdv": "attention_backward_dkdv",
        "dq": "attention_backward_dq",
    }[kernel] + f"_v{version}"
    nbytes = smem_bytes(kernel, d)
    threads = (
        d["ATT_WARPS"] * 32
        if version == 1
        else (d["ATT_BK"] if kernel == "dkdv" else d["ATT_BQ"]) * 2
    )
    cc.launch(cc.function(FILE, name, d, dyn_smem=nbytes), grid, threads, args, shared_mem=nbytes)


def forward(version, q, k, v, scale, causal=True, d=None):
    import cupy as cp

    q, k, v = _prep(q, k, v)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    d = d or defines(version, D, cc.dtype_name(q))
    o = cp.empty_like(q)
    lse = cp.empty((B, H, Tq), cp.float32)
    rows = d["ATT_WARPS"] * d["ATT_RPW"] if version == 1 else d["ATT_BQ"]
    _launch(
        "forward",
        version,
        d,
        (cc.ceil_div(Tq, rows), B * H),
        (o, lse, q, k, v, Tq, Tk, float(scale), bool(causal)),
    )
    return o, lse


def backward(version, do, q, k, v, o, lse, scale, causal=True, d=None):
    import cupy as cp

    do, q, k, v, o = _prep(do, q, k, v, o)
    lse = cc.contiguous(lse)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    d = d or defines(version, D, cc.dtype_name(q))
    dq, dk, dv = cp.empty_like(q), cp.empty_like(k), cp.empty_like(v)
    delta = cp.empty((B, H, Tq), cp.float32)
    R = B * H * Tq
    cc.launch(cc.function(FILE, "attention_delta", d), cc.ceil_div(R, 8), 256, (delta, do, o, R))
    args = (q, k, v, do, lse, delta, Tq, Tk, float(scale), bool(causal))
    q_rows = d["ATT_WARPS"] * d["ATT_RPW"] if version == 1 else d["ATT_BQ"]
    k_rows = d["ATT_WARPS"] * d["ATT_RPW"] if version == 1 else d["ATT_BK"]
    _launch("dkdv", version, d, (cc.ceil_div(Tk, k_rows), B * H), (dk, dv, *args))
    _launch("dq", version, d, (cc.ceil_div(Tq, q_rows), B * H), (dq, *args))
    return dq, dk, dv


def _forward_v(version):
    def fn(q, k, v, scale, causal=True):
        return forward(version, q, k, v, scale, causal)
    fn.__name__ = f"attention_forward_v{version}"
    return fn


def _backward_v(version):
    def fn(do, q, k, v, o, lse, scale, causal=True):
        return backward(version, do, q, k, v, o, lse, scale, causal)
    fn.__name__ = f"attention_backward_v{version}"
    return fn


LADDERS = (
    Ladder("attention_forward", "cuda", default=1, also=(2,), rungs=(
        Rung(1, _forward_v(1), "FP32 flash forward, online softmax in registers",
             _fits_forward(1)),
        Rung(2, _forward_v(2), "FP16/BF16 on tensor cores (mma), FP32 softmax",
             _fits_forward(2)),
    )),
    Ladder("attention_backward", "cuda", default=1, also=(2,), rungs=(
        Rung(1, _backward_v(1), "FP32: dk/dv per key block, dq per query block",
             _fits_backward(1)),
        Rung(2, _backward_v(2), "FP16/BF16 on tensor cores", _fits_backward(2)),
    )),
)
