"""Quantized products with 8-bit activations (Numba): y = x~ W^T, x~ = x rounded to Q8_0 blocks.

kernels/reference.py ``qmatmul_q8_forward`` is the definition: each block of 32 values of a row
of x becomes d q (d = max |x| / 127 stored as float16, q = round(x / d) in -127..127, GGML's
Q8_0), then the product with W in Q8_0/Q4_0/Q4_1 blocks. That is what llama.cpp's CPU kernels do
inside every quantized product. It is not qmatmul_forward: the rounding of x moves the logits
and can change a small model's greedy answer (issue 19), so models use it only when asked
(``minillm.nn.quant.set_activations(model, "q8_0")``, ``--activations q8_0``; by default
kernels/cpu/qmatmul.py keeps x in float32). On SmolLM2-135M (Q4_1/Q8_0 GGUF), over 1024 tokens
of this repository's README (every product rounded, the tied head too): perplexity 34.94
against float32's 34.83, logits differing by 0.20 RMS (2.0 at most), the same argmax at 97% of
positions.

What it buys: a decoding step of a server's 8 sequences is bound by the float multiply-adds,
one per weight per row of x (qmatmul v8: about 150 GFLOP/s on 2 Zen 4 cores). With x as bytes,
AVX-512 VNNI multiplies 64 byte pairs and adds them into 16 int32 lanes in one instruction
(kernels/cpu/_groupdot_q8.py). SmolLM2's 120 layer matrices, Q4_1, ms per pass
(``bench_qmatmul_rows.py --versions 8,q8:2``, Zen 4, 2 threads; the VM's noise moves single
figures by 10-30%; one quiet run, benchmarks/README.md has more): 1 row 3.2 (float x, v8) /
2.5 (v2), 8 rows 9.8 / 5.6, 16 rows 18.1 / 9.8, 64 rows 67.9 / 29.6, 512 rows 540 / 235.
Its tied head (49152 x 576, Q8_0): 8 rows 2.4 / 1.2 ms. A served 8-row decoding step of SmolLM2
went from 17.2 to 12.8 ms offline, one row from 6.3 to 5.9, and a prefill of 8 prompts from 74
to 45.

qmatmul_q8_forward
  v1  x rounded (``quantize_rows``: the blocks' scales, codes and code sums, rows in parallel),
      expanded back to x~ = d q in x's dtype, then qmatmul_forward's own choice of kernel (v8
      on row groups, the GEMM rungs for a prompt). Any CPU, float32 or float64.
  v2  (default) row groups times x's codes in LLVM IR, ``vpdpbusd`` on AVX-512 VNNI: exact
      int32 sums per block, so each row's result has the same bits in a batch of 8 as alone.
      Runs v1 where it declines (no AVX-512 VNNI, float64 x, rows not a multiple of 32).
"""

import types as _pytypes

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ..ladder import Ladder, Rung
from ..quant import FORMATS, GROUP, MATMUL_TYPES, Q4_0, Q4_1, Q8_0, QuantWeight
from . import _groupdot, _groupdot_q8
from ._groupdot import group_format
from ._groupdot_q8 import GROUP_DOT_Q8, ROWS
from ._microkernel import CPU_FLAGS
from ._serial import pick, picks, source_tag
from .qmatmul import _check as _check_shapes
from .qmatmul import _float as _float_input

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}  # no fastmath: rounding as NumPy
QK = 32
VNNI = {"avx512f", "avx512bw", "avx512_vnni"} <= CPU_FLAGS


@intrinsic
def _bits(typingctx, v):
    """A float32's 32 bits as a uint32 (no array round trip: that allocated per call)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(v), codegen


@intrinsic
def _float(typingctx, u):
    """The float32 whose bits are the low 32 of the integer u."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if u.bitwidth != 32:
            v = (builder.trunc if u.bitwidth > 32 else builder.zext)(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(u), codegen


@njit(**_JIT)
def _f16(v):
    # float32 v >= 0 rounded to the nearest float16 (ties to even), as a float32: NumPy's
    # astype(float16) of a Q8_0 block scale, which Numba cannot call
    u = _bits(v)
    if u >= np.uint32(0x7F800000):  # inf, NaN
        return v
    if u >= np.uint32(0x477FF000):  # 65520 and up: past float16's largest, 65504
        return np.float32(np.inf)
    if u < np.uint32(0x38800000):  # below 2^-14: float16's subnormals, steps of 2^-24
        return np.float32(np.rint(v * np.float32(2.0**24)) * np.float32(2.0**-24))
    return _float((u + np.uint32(0x0FFF) + ((u >> np.uint32(13)) & np.uint32(1)))
                  & np.uint32(0xFFFFE000))


@njit(**_JIT)
def _quantize_row(x, q, d, s):
    # one row x (K,) float32 -> q (K,) int8 codes, d (K / 32,) block scales rounded to float16,
    # s (K / 32,) int32 sums of each block's codes: kernels/quant.py's Q8_0 quantizer step by
    # step in float32 (d = max|x| / 127, q = x * (1 / d) rounded half away from zero, as C's
    # roundf), then the scale rounded as the block stores it. max |x| is taken over the bits of
    # |x|, whose integer order is the float order: a reduction that vectorises exactly.
    for b in range(x.shape[0] // QK):
        m = np.uint32(0)
        for j in range(b * QK, (b + 1) * QK):
            m = max(m, _bits(x[j]) & np.uint32(0x7FFFFFFF))
        db = _float(m) / np.float32(127)
        inv = np.float32(0) if db == 0 else np.float32(1) / db
        t = 0
        for j in range(b * QK, (b + 1) * QK):
            v = x[j] * inv
            a = abs(v)
            f = np.floor(a)
            r = np.int32(f) + np.int32(a - f >= np.float32(0.5))
            c = r if v >= 0 else -r
            q[j] = c
            t += c
        d[b] = _f16(db)
        s[b] = t


@njit(parallel=True, **_JIT)
def _quantize_rows(x, q, d, s):
    for n in prange(x.shape[0]):
        _quantize_row(x[n], q[n], d[n], s[n])


def quantize_rows(x):
    """x (N, K) -> (q int8 (N, K), d float32 (N, K / 32), s int32 (N, K / 32)): the rows of x in
    Q8_0 blocks, x~[n, 32 b + j] = d[n, b] q[n, 32 b + j] (d rounded to float16), s the sums of
    each block's codes. Bit for bit kernels/quant.py's ``quantize(x, Q8_0)``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    N, K = x.shape
    q = np.empty((N, K), dtype=np.int8)
    d = np.empty((N, K // QK), dtype=np.float32)
    s = np.empty((N, K // QK), dtype=np.int32)
    if x.size:
        pick(_quantize_rows, x.size)(x, q, d, s)
    return q, d, s


@njit(parallel=True, **_JIT)
def _expand(out, q, d):
    # out (N, K) = d q block by block: x~ in out's dtype
    N, K = q.shape
    for n in prange(N):
        for j in range(K):
            out[n, j] = d[n, j // QK] * q[n, j]


def _check(x, qw):
    # qmatmul.py's checks (the same sentences): x as float32/float64 (N, K) for W (O, K)
    x = _float_input(x)
    _check_shapes(qw, x, qw.shape[1] if isinstance(qw, QuantWeight) else None, "x")
    return x


def qmatmul_q8_forward_v1(x, qw):
    """v1: x rounded and expanded back to x~, then qmatmul_forward's kernel of the registry."""
    from .. import registry  # the float product's own choice of version

    x = _check(x, qw)
    q, d, _ = quantize_rows(x)
    xt = np.empty(x.shape, dtype=x.dtype)
    if xt.size:
        pick(_expand, xt.size)(xt, q, d.astype(x.dtype))
    return registry.get("qmatmul_forward", xt)(xt, qw)


def _v2(out, x, data):
    # out: (N, O) float32; x (N, K) float32; data: (G, K / 32, R * TS) uint8 in the row-group
    # layout. x is rounded first (its int8 codes xq, block scales xd and code sums xs), then
    # per group g: out[:, g R:(g + 1) R], up to ROWS rows of x per call of the IR kernel. TS
    # and group_dot_q8_1..8 are the globals _make_v2 gives each format's copy (as qmatmul.py's
    # _make_v8).
    N, K = x.shape
    G, nb = data.shape[0], data.shape[1]
    xq = np.empty((N, K), dtype=np.int8)
    xd = np.empty((N, nb), dtype=np.float32)
    xs = np.empty((N, nb), dtype=np.int32)
    for n in range(N):  # a few rows: one thread
        _quantize_row(x[n], xq[n], xd[n], xs[n])
    O = out.shape[1]
    R = data.shape[2] // TS  # noqa: F821
    for g in prange(G):
        off = g * nb * R * TS  # noqa: F821
        for n in range(0, N, ROWS):
            r = min(ROWS, N - n)
            a = (data, off, nb, xq, n * K, K, xd, xs, n * nb, nb, out, n * O + g * R, O)
            if r == 8:
                group_dot_q8_8(*a)  # noqa: F821
            elif r == 7:
                group_dot_q8_7(*a)  # noqa: F821
            elif r == 6:
                group_dot_q8_6(*a)  # noqa: F821
            elif r == 5:
                group_dot_q8_5(*a)  # noqa: F821
            elif r == 4:
                group_dot_q8_4(*a)  # noqa: F821
            elif r == 3:
                group_dot_q8_3(*a)  # noqa: F821
            elif r == 2:
                group_dot_q8_2(*a)  # noqa: F821
            else:
                group_dot_q8_1(*a)  # noqa: F821


_IR_TAG = source_tag(_groupdot, _groupdot_q8)  # a new cache entry when the IR changes


def _make_v2(qt):
    names = {f"group_dot_q8_{n}": GROUP_DOT_Q8[qt][n] for n in range(1, ROWS + 1)}
    f = _pytypes.FunctionType(_v2.__code__, {**globals(), **names, "TS": group_format(qt)[0]},
                              f"qmatmul_q8_forward_v2_{FORMATS[qt].name}_{_IR_TAG}")
    f.__qualname__ = f.__name__  # its own cache file
    return njit(parallel=True, **_JIT)(f)


_V2 = {qt: _make_v2(qt) for qt in (Q8_0, Q4_0, Q4_1)}


def _vnni(x, qw):
    """float32 x, AVX-512 VNNI, and Q8_0, Q4_0 or Q4_1 weights in row groups"""
    if not VNNI:
        return "no AVX-512 VNNI on this CPU"
    if not isinstance(qw, QuantWeight) or qw.qtype not in MATMUL_TYPES:
        return "not a Q8_0, Q4_0 or Q4_1 weight"
    if np.asarray(x).dtype != np.float32:
        return f"{np.asarray(x).dtype.name} input"
    if not qw.grouped:
        return "a weight in GGUF's row layout"
    return None


def qmatmul_q8_forward_v2(x, qw):
    """v2: row groups times x's int8 codes on AVX-512 VNNI (v1 where it declines)."""
    x = _check(x, qw)
    if x.dtype != np.float32 or not VNNI:
        return qmatmul_q8_forward_v1(x, qw)
    qw = qw.to_groups()
    if not qw.grouped:  # rows not a multiple of GROUP
        return qmatmul_q8_forward_v1(x, qw)
    out = np.empty((x.shape[0], qw.shape[0]), dtype=np.float32)
    if out.size:
        ts = qw.format.type_size
        data = qw.blocks.reshape(qw.shape[0] // GROUP, qw.blocks.shape[1] // ts, GROUP * ts)
        pick(_V2[qw.qtype], out.size * x.shape[1])(out, x, data)
    return out


LADDERS = (
    Ladder("qmatmul_q8_forward", "cpu", default=2, also=(1,),
           about="y = x~ W^T, x rounded to Q8_0 blocks (llama.cpp's activations), W in blocks",
           rungs=(
        Rung(1, picks(qmatmul_q8_forward_v1),
             "x rounded and expanded back, then qmatmul_forward's kernel"),
        Rung(2, picks(qmatmul_q8_forward_v2),
             "row groups times x's bytes, vpdpbusd: exact int32 sums per block", _vnni),
    )),
)
