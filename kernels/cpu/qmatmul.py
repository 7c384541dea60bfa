"""Products with quantized weights (Numba): y = x W^T and dx = dy W, W kept in GGML blocks.

W: (O, K) as a kernels.quant.QuantWeight (Q8_0, Q4_0 or Q4_1: K / 32 blocks per row, a
float16 scale d, for Q4_1 a float16 offset m, and 32 packed codes q; w = d * q + m, see
kernels/quant.py). x, y, dy, dx stay float32 (or float64): the weights are dequantized inside
the product, never the activations, so every version equals the reference (dequantize, then
matmul; kernels/reference.py) to float32 rounding. llama.cpp instead rounds x to 8 bits inside
these products, which changes greedy answers of small models (issue 19); qmatmul_q8.py does
that where a model asks for it.

Decoding one token is a matrix-vector product (N = 1): each weight is read once and used once,
so the time is the bytes of W over the memory bandwidth. Q4_1 reads 5 bits per weight instead of
float32's 32, Q8_0 8.5: the point of keeping W in blocks. Prefill (N > 1) reuses each decoded
weight N times and becomes compute-bound, which is where unpacking a block once pays.

Versions (fraction of memory bandwidth reached at N = 1 on SmolLM2-135M's shapes (576 x 576,
1536 x 576, 576 x 1536), measured with ``python benchmarks/bench_kernels.py --op
qmatmul_forward --shapes tiny``, which prints W's bytes per second beside a parallel read of
memory in the same run: 9.5 GB/s on the 2-core AMD EPYC (Zen 3) VM these figures come from):

qmatmul_forward
  v1  plain loops (n, o, k), one thread; every weight decoded from its bytes on its own (block
      scale re-read per weight), float64 accumulator. The readable definition.
      fraction of memory bandwidth: 0.02-0.08.
  v2  prange over output rows; K walked block by block, the scale (and offset) decoded once per
      block, codes extracted in the inner loop; the x rows loop inside the output row, so one
      row of blocks (a few hundred bytes) stays in L1 for all N rows of x.
      fraction of memory bandwidth: 0.18-0.25 (v2 reads each block's scale once per row, but its inner loop stays scalar).
  v3  prange over tiles of OT output rows; each tile's blocks are unpacked once into a small
      float buffer (OT, K) (nibble unpacking in straight loops LLVM vectorises), then every x row
      is dotted with each buffered row: contiguous products that vectorise, the dequantization
      paid once per tile whatever N is, and each x row read once per OT output rows; each
      thread takes a contiguous run of tiles and allocates its buffer once.
      fraction of memory bandwidth: 0.05-0.09.
  v4  for prompts: W dequantized into a float temporary by a parallel Numba loop (the same
      unpacking as v3), a panel of rows at a time (PANEL_ELEMS weights: 4 MiB, so the tied
      49152-row head never needs its 113 MiB float copy; either layout), each panel then one
      BLAS GEMM on Numba's pool (matmul/pool.py). The dequantization costs O K against the product's N O K.
      (runs for GEMM_MIN_ROWS rows or more on weights in GGUF's row layout)
      fraction of memory bandwidth: not a bandwidth-bound rung (compute-bound GEMM).
  v5  for decoding: no float buffer at all. Within a block w = d q + m, so x . w = d (x . q) +
      m sum(x): the codes are converted and multiplied as they are unpacked (one pass over the
      block's bytes), the scale applied once per block, and Q4_1's offset through x's block
      sums, computed once per call. v3 wrote every weight to a buffer and read it back.
      (runs for fewer than GEMM_MIN_ROWS rows on weights in GGUF's row layout)
      fraction of memory bandwidth: 0.15-0.16 (Q4_1), 0.19-0.38 (Q8_0) at N = 1.
  v6  for decoding, on the row-group layout (kernels/quant.py: GROUP = 32 rows interleaved,
      the same bytes permuted; the GGUF loader and --dtype q8_0 store weights this way). v5's
      lanes ran along one block of one row: 16 or 32 products, then a sum across the vector and
      a scale, for every 32 weights, and LLVM kept much of it scalar. Here byte j of a block is
      a vector of 32 rows, multiplied by one broadcast x value and added lane by lane; the
      scales apply lane by lane once per block; no sum ever crosses lanes. Nibbles are split in
      float arithmetic (floor of a sixteenth) because Numba widens integer ops to int64, whose
      conversion to float does not vectorise on AVX2; Q8_0's codes are stored plus 128 for the
      same reason (unsigned bytes, the 128 taken back through x's block sums).
      (the ladder's ``also``; v8 replaced it for one row)
      For several rows of x (a server's batch), each byte is converted once into lane arrays
      and used for every row; at N = 1 (decoding) a separate loop uses it as it is converted,
      twice as fast there.
      Four code bytes (four vectors of rows) per pass over the block's sums; the one-row
      kernel fuses its multiply-adds (FMA, without reassociation, so a cached and a fresh
      compile agree): SmolLM2's 120 layer matrices at one row 8.2-8.5 ms against 8.9-9.7 in
      Q4_1, 7.1-7.6 against 7.6-7.8 in Q8_0 (bench_qmatmul_rows.py --rows 1 --versions 6,
      three interleaved pairs).
      fraction of memory bandwidth: 0.49-0.88 (Q4_1), 1.09-1.86 (Q8_0) at N = 1 (read
      bandwidth 8.4 GB/s in that run); 23-44x the reference. (Above 1.0: SmolLM2's single
      matrices partly stay in the 2 cores' caches.) Q4_1 stays below the bandwidth: splitting
      nibbles in float arithmetic costs more instructions per byte than the bytes cost to read.
  v7  for a server's batch and for prompts, on the row-group layout: v6's N-row loop paid the
      lane arithmetic of every byte once per row of x (at 8 rows 4x the time of one), and v4
      wrote all of W as floats to memory and read it back. Here each group of 32 rows is
      decoded once, v6's way (whole 32-lane vectors), into a float panel W_g^T, V7_DEPTH = 256
      rows of K at a time (32 KiB: it stays in L1), and x W_g^T runs on matmul v5's
      register-blocked micro-kernel (kernels/cpu/_microkernel.py: MR rows of x by 16 columns
      in FMA registers, x read in place). Decoding costs about what v6's N = 1 pass costs, the product is compute-bound.
      (runs for more than V8_MAX_ROWS rows of x on grouped weights with AVX2; declines one
      row; with AVX-512 v8 takes every row count, see V8_MAX_ROWS)
      At 64 rows of x, SmolLM2's shapes: 85-142 GFLOP/s (v4 22-44, v6 25-61; ``bench_kernels.py
      --op qmatmul_forward --shapes tiny``).
      SmolLM2-135M's 120 layer matrices in Q4_1, milliseconds per pass, v4 / v6 / v7
      (``python benchmarks/bench_qmatmul_rows.py``, 2 threads, Zen 3): 1 row 84 / 11 / 33;
      2 rows 171 / 29 / 24; 6 rows 349 / 49 / 28; 8 rows 181 / 65 / 42; 16 rows 231 / 116 / 59;
      64 rows 427 / 400 / 127; 512 rows 1128 / 3153 / 826.
  v8  for decoding, on the row-group layout: v6's arithmetic with the group's inner product
      written as LLVM IR (kernels/cpu/_groupdot.py). In v6 each pass over four code bytes was a
      lane loop of its own, vectorised as 4 iterations behind run-time alias checks,
      broadcasts and spills, about as costly as the work: v6 ran near 1 weight per cycle per
      core even on a matrix in L2. Here the 32 rows of a group are whole vector values from
      the first block to the last: each code byte of 8 rows is widened to 32 bits as it is
      loaded (vpmovzxbd from memory), its nibbles split by one AND and one shift, converted,
      and multiply-added with a broadcast x value; sums and scales stay in registers; the
      float16 scales are converted by vcvtph2ps. For a server's batch each decoded code serves
      up to ROWS = 4 rows of x (their sums side by side in registers); the codes are decoded
      again for each further 4 rows, so with AVX2 v7 takes over from V8_MAX_ROWS. With
      AVX-512 (32 vector registers) the decoding costs less than the multiply-adds it feeds
      and v8 runs at the FMA units' rate for any number of rows (Zen 4, 2 cores: 182 GFLOP/s
      at 512 rows, v7 81; 8 rows per call instead of 4 gained nothing there). A call for
      several rows prefetches the blocks 4 KiB ahead (_groupdot.PREFETCH): at 4-16 rows the
      arithmetic of a block takes about as long as reading it, and without the prefetch the
      two took turns (Zen 4, SmolLM2's 120 matrices, 8 rows: 11.3-13.2 -> 10.1-11.7 ms).
      (default; with AVX2 declines more than V8_MAX_ROWS rows, where v7 runs)
      fraction of memory bandwidth: 1.06-1.67 (Q4_1), 1.50-2.12 (Q8_0) at N = 1
      (``bench_kernels.py --op qmatmul_forward --shapes tiny``, read bandwidth 9.9 GB/s in that
      run; single matrices partly in cache), 42-81x the reference, 2.1-2.5x v6. SmolLM2's 120
      layer matrices (63 MiB, none in cache when it comes round), Q4_1, ms per pass
      (``bench_qmatmul_rows.py --versions 6,7,8``; v6's one row took 16 ms that day, 11 on a
      quiet one): v6 / v7 / v8 1 row 16.2 / 32.5 / 5.3-6.4 (12 GB/s of weights: about what this
      VM reads from memory with 2 threads); v7 / v8 2 rows 29-32 / 10-11, 4 rows 29-31 / 12-14,
      8 rows 38 / 25-30, 16 rows 62 / 42, 32 rows 104 / 109.
qmatmul_backward_input
  v1  plain loops (n, o, k), one thread, weights decoded one by one.
  v2  prange over blocks of K (each thread owns 32 columns of dx: no write races); each
      (o, block) unpacked once into a 32-float buffer, then dx[n, block] += dy[n, o] * buffer
      for every n, contiguous and vectorised.  (runs for fewer than GEMM_MIN_ROWS rows)
  v3  W dequantized a panel at a time (from either layout), dx += dy[:, panel] @ W[panel] on
      the pool's GEMM.  (default; declines fewer than GEMM_MIN_ROWS rows)

GEMM_MIN_ROWS = 16 lies between two measured points (see its comment). A weight in a format
without kernels here (F16, BF16, Q5, K-quants) is declined by every rung's ``fits``, so the
registry runs the reference: dequantize, then matmul. The table of rungs and defaults is ``LADDERS`` at the end
of this file. Tests: tests/kernels/test_ladders.py (every rung vs the reference, Q8_0 / Q4_0 /
Q4_1) and tests/kernels/test_cpu_qmatmul.py (the size rule, several panels, read-only blocks,
the formats against the gguf package).
"""

import types as _pytypes

import numpy as np
from numba import njit, prange

from ..ladder import Ladder, Rung
from ..quant import FORMATS, GROUP, MATMUL_TYPES, Q4_0, Q4_1, Q8_0, QuantWeight
from . import _groupdot
from ._fastmath import FASTMATH
from ._groupdot import GROUP_DOT, ROWS, group_format
from ._microkernel import MR, NV, VECTOR_BYTES, micro
from ._serial import pick, source_tag, threads
from .matmul import pool as matmul_pool

_JIT = {"fastmath": FASTMATH, "cache": True, "error_model": "numpy", "nogil": True}  # nogil: a
# server's HTTP thread streams tokens while a product runs
QK = 32  # weights per block in every format here
OT = 4  # output rows per tile in v3
V7_DEPTH = 256  # v7: rows of K decoded into the panel at a time (32 KiB of float32: L1)
# v6's one-row kernel: multiply-adds fused (FMA), no reassociation (see _fastmath.FASTMATH)
FMA = (FASTMATH - {"reassoc"}) | {"contract"}
# v8 decodes each group's codes again for every ROWS rows of x. With AVX2's 16 vector registers
# v7's decoding once per group into a panel wins from 32 rows (bench_qmatmul_rows.py, Zen 3,
# Q4_1, ms per pass v7 / v8: 16 rows 62 / 42, 32 rows 104 / 109; Q8_0 16 rows 46.5 / 41.9), so
# v8 stops at 16. With AVX-512, v8 wins at every row count measured (Zen 4, Q4_1, v7 / v8: 16
# rows 76 / 22, 60 rows 151 / 70, 128 rows 340 / 149, 512 rows 1336 / 598; Q8_0 512 rows 1544 /
# 622): its multiply-adds run near the FMA units' rate (512 rows: 182 GFLOP/s on 2 cores), and
# v7's micro-kernel reached 81. None: no limit.
V8_MAX_ROWS = 16 if VECTOR_BYTES == 32 else None
PANEL_ELEMS = 1 << 20  # v4: weights dequantized at a time (4 MiB of float32), not all of W

# float16 bit pattern -> value, in each activation dtype (256 KiB for float32): exact, and a
# load instead of bit arithmetic for every block scale
_F16 = {np.dtype(t): np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(t)
        for t in (np.float32, np.float64)}


# --------------------------------------------------------------------------- block decoding
@njit(fastmath=FASTMATH, error_model="numpy")
def _layout(qt):
    # (bytes per block, bytes before the codes) of a format
    if qt == Q8_0:  # d, 32 int8
        return 34, 2
    if qt == Q4_0:  # d, 16 bytes of nibbles
        return 18, 2
    return 20, 4  # Q4_1: d, m, 16 bytes of nibbles


@njit(fastmath=FASTMATH, error_model="numpy")
def _scales(row, off, qt, f16):
    # d and m of the block at byte `off` of `row` (m = 0 where the format has none)
    d = f16[np.int64(row[off]) | (np.int64(row[off + 1]) << 8)]
    if qt == Q4_1:
        return d, f16[np.int64(row[off + 2]) | (np.int64(row[off + 3]) << 8)]
    return d, d - d


@njit(fastmath=FASTMATH, error_model="numpy")
def _code(row, off, qt, j):
    # the integer code of weight j of the block at `off`, centred: w = d * code + m
    if qt == Q8_0:
        q = np.int32(row[off + 2 + j])
        return q - ((q >> 7) << 8)  # the byte read as int8
    b = np.int32(row[off + (2 if qt == Q4_0 else 4) + (j & 15)])
    q = (b & 15) if j < 16 else (b >> 4)
    return q - 8 if qt == Q4_0 else q


@njit(fastmath=FASTMATH, error_model="numpy")
def _unpack(dst, k0, row, off, qt, f16):
    # dst[k0 : k0 + 32] = the 32 weights of the block at `off`, in dst's dtype
    t = f16.dtype.type
    d, m = _scales(row, off, qt, f16)
    if qt == Q8_0:
        for j in range(QK):
            q = np.int32(row[off + 2 + j])
            dst[k0 + j] = d * t(q - ((q >> 7) << 8)) + m
    else:
        h = 2 if qt == Q4_0 else 4  # bytes before the nibbles
        c = 8 if qt == Q4_0 else 0  # Q4_0's codes are centred on 8
        for j in range(QK // 2):
            b = np.int32(row[off + h + j])
            dst[k0 + j] = d * t((b & 15) - c) + m
            dst[k0 + j + QK // 2] = d * t((b >> 4) - c) + m


# --------------------------------------------------------------------------- forward
@njit(**_JIT)
def qmatmul_forward_v1(out, x, blocks, qt, f16):
    # out: (N, O)  x: (N, K)  blocks: (O, K / 32 * bytes per block) uint8
    N, K = x.shape
    O = blocks.shape[0]
    ts, _ = _layout(qt)
    for n in range(N):
        for o in range(O):
            acc = 0.0
            for k in range(K):
                off = (k // QK) * ts
                d, m = _scales(blocks[o], off, qt, f16)
                acc += x[n, k] * (d * _code(blocks[o], off, qt, k % QK) + m)
            out[n, o] = acc


@njit(parallel=True, **_JIT)
def qmatmul_forward_v2(out, x, blocks, qt, f16):
    N, K = x.shape
    O = blocks.shape[0]
    ts, _ = _layout(qt)
    t = f16.dtype.type
    for o in prange(O):
        row = blocks[o]
        for n in range(N):
            acc = t(0)
            for b in range(K // QK):
                off = b * ts
                d, m = _scales(row, off, qt, f16)
                for j in range(QK):
                    acc += x[n, b * QK + j] * (d * t(_code(row, off, qt, j)) + m)
            out[n, o] = acc


@njit(parallel=True, **_JIT)
def qmatmul_forward_v3(out, x, blocks, qt, f16, nt):
    # nt: chunks of tiles, one per thread, so each thread allocates its tile buffer once
    N, K = x.shape
    O = blocks.shape[0]
    ts, _ = _layout(qt)
    t = f16.dtype.type
    n_tiles = (O + OT - 1) // OT
    for c in prange(nt):
        buf = np.empty((OT, K), dtype=f16.dtype)  # one tile's rows of W, dequantized
        for tile in range(c * n_tiles // nt, (c + 1) * n_tiles // nt):
            o0 = tile * OT
            rows = min(OT, O - o0)
            for r in range(rows):
                for b in range(K // QK):
                    _unpack(buf[r], b * QK, blocks[o0 + r], b * ts, qt, f16)
            for n in range(N):
                xn = x[n]
                for r in range(rows):
                    w = buf[r]
                    acc = t(0)
                    for k in range(K):
                        acc += xn[k] * w[k]
                    out[n, o0 + r] = acc


def _make_v5(qt):
    # v5 compiled once per format: qt, the header bytes and the centring are constants of the
    # compiled loop (a branch on a runtime format kept LLVM from vectorising it).
    ts, h = (34, 2) if qt == Q8_0 else ((18, 2) if qt == Q4_0 else (20, 4))
    centre = 8.0 if qt == Q4_0 else 0.0
    is_q8, has_m = qt == Q8_0, qt == Q4_1

    def qmatmul_forward_v5(out, x, blocks, f16):
        # out: (N, O)  x: (N, K)  blocks: (O, K / 32 * ts) uint8
        # Per block b of row o: x_b . w_b = d * (x_b . q_b) + m * sum(x_b): the codes are
        # multiplied as they are unpacked (no float buffer) and the offset costs one product
        # per block with x's block sums, computed once per call.
        N, K = x.shape
        O = blocks.shape[0]
        nb = K // QK
        t = f16.dtype.type
        c = t(centre)
        xs = np.zeros((N, nb), dtype=f16.dtype)  # (N, K / 32) block sums of x
        if has_m:
            for n in range(N):
                for b in range(nb):
                    acc = t(0)
                    for j in range(QK):
                        acc += x[n, b * QK + j]
                    xs[n, b] = acc
        lo, four = np.uint8(15), np.uint8(4)
        for o in prange(O):
            row = blocks[o]
            for n in range(N):
                xn = x[n]
                total = t(0)
                for b in range(nb):
                    off = b * ts
                    xb = xn[b * QK:(b + 1) * QK]
                    d = f16[np.uint32(row[off]) | (np.uint32(row[off + 1]) << np.uint32(8))]
                    acc = t(0)
                    if is_q8:
                        qb = row[off + 2:off + 2 + QK]
                        for j in range(QK):
                            q = np.int32(qb[j])
                            acc += t(q - ((q >> 7) << 8)) * xb[j]
                    else:
                        qb = row[off + h:off + h + QK // 2]
                        for j in range(QK // 2):
                            acc += ((t(qb[j] & lo) - c) * xb[j]
                                    + (t(qb[j] >> four) - c) * xb[j + 16])
                    total += d * acc
                    if has_m:
                        m = f16[np.uint32(row[off + 2]) | (np.uint32(row[off + 3]) << np.uint32(8))]
                        total += m * xs[n, b]
                out[n, o] = total

    qmatmul_forward_v5.__qualname__ = f"qmatmul_forward_v5_{FORMATS[qt].name}"  # cache key
    return njit(parallel=True, **_JIT)(qmatmul_forward_v5)


_V5 = {qt: _make_v5(qt) for qt in (Q8_0, Q4_0, Q4_1)}


def qmatmul_forward_v5(out, x, blocks, qt, f16):
    """v5: the kernel compiled for this format (the serial twin for small products)."""
    k = pick(_V5[qt], x.shape[0] * out.shape[1] * x.shape[1])
    k(out, x, blocks, f16)


@njit(fastmath=FASTMATH, error_model="numpy")
def _group_scales(ds, ms, gb, f16, R, has_m):
    # the R scales d (and for Q4_1 the R offsets m) of one row-group block's bytes gb
    for r in range(R):
        ds[r] = f16[np.uint32(gb[2 * r]) | (np.uint32(gb[2 * r + 1]) << np.uint32(8))]
    if has_m:
        for r in range(R):
            ms[r] = f16[np.uint32(gb[2 * R + 2 * r])
                        | (np.uint32(gb[2 * R + 2 * r + 1]) << np.uint32(8))]


@njit(fastmath=FASTMATH, error_model="numpy")
def _block_sums(x, nb):
    # (N, nb) sums of x (N, 32 nb) over each block of 32 columns: Q4_1's offsets and the
    # codes' centres (8, 128) enter the products through them
    N = x.shape[0]
    xs = np.empty((N, nb), dtype=x.dtype)
    for n in range(N):
        for b in range(nb):
            a = x.dtype.type(0)
            for j in range(QK):
                a += x[n, b * QK + j]
            xs[n, b] = a
    return xs


def _make_v6(qt):
    # v6 compiled once per format, like v5; W in the row-group layout (kernels/quant.py).
    ts, h, is_q8, has_m, is_q40 = group_format(qt)

    def groups_one_row(out, xn, data, f16):
        # the N = 1 case of v6: blk[r] accumulates code * x straight from the converted byte
        # (no lane arrays in between: twice as fast as the N-row loop at N = 1). A kernel of
        # its own, called from Python: a dispatcher called from the other kernel made that
        # one miss Numba's on-disk cache in every new process (compiled again each time).
        G, nb = data.shape[0], data.shape[1]
        R = data.shape[2] // ts  # GROUP, read at run time (see below)
        t = f16.dtype.type
        xs = np.empty(nb, dtype=f16.dtype)  # (K / 32,) block sums of x
        for b in range(nb):
            a = t(0)
            for j in range(QK):
                a += xn[b * QK + j]
            xs[b] = a
        sixteenth, sixteen, eight, c128 = t(0.0625), t(16), t(8), t(128)
        for g in prange(G):
            acc = np.zeros(R, dtype=f16.dtype)
            blk = np.empty(R, dtype=f16.dtype)
            ds = np.empty(R, dtype=f16.dtype)
            ms = np.empty(R, dtype=f16.dtype)
            for b in range(nb):
                gb = data[g, b]
                for r in range(R):
                    blk[r] = 0
                # four code bytes (four vectors of R rows) per pass over blk: a quarter of
                # the loads and stores of blk and of the loop's overhead per byte
                if is_q8:
                    for j in range(0, QK, 4):
                        x0, x1 = xn[b * QK + j], xn[b * QK + j + 1]
                        x2, x3 = xn[b * QK + j + 2], xn[b * QK + j + 3]
                        c0 = gb[h * R + j * R:h * R + (j + 1) * R]
                        c1 = gb[h * R + (j + 1) * R:h * R + (j + 2) * R]
                        c2 = gb[h * R + (j + 2) * R:h * R + (j + 3) * R]
                        c3 = gb[h * R + (j + 3) * R:h * R + (j + 4) * R]
                        for r in range(R):  # codes + 128 (kernels/quant.py)
                            blk[r] += (t(c0[r]) * x0 + t(c1[r]) * x1) + \
                                (t(c2[r]) * x2 + t(c3[r]) * x3)
                else:
                    for j in range(0, QK // 2, 4):
                        x0, y0 = xn[b * QK + j], xn[b * QK + j + 16]  # low, high nibble's x
                        x1, y1 = xn[b * QK + j + 1], xn[b * QK + j + 17]
                        x2, y2 = xn[b * QK + j + 2], xn[b * QK + j + 18]
                        x3, y3 = xn[b * QK + j + 3], xn[b * QK + j + 19]
                        c0 = gb[h * R + j * R:h * R + (j + 1) * R]
                        c1 = gb[h * R + (j + 1) * R:h * R + (j + 2) * R]
                        c2 = gb[h * R + (j + 2) * R:h * R + (j + 3) * R]
                        c3 = gb[h * R + (j + 3) * R:h * R + (j + 4) * R]
                        for r in range(R):
                            f0, f1, f2, f3 = t(c0[r]), t(c1[r]), t(c2[r]), t(c3[r])
                            # nibbles in float arithmetic, as below
                            h0, h1 = np.floor(f0 * sixteenth), np.floor(f1 * sixteenth)
                            h2, h3 = np.floor(f2 * sixteenth), np.floor(f3 * sixteenth)
                            blk[r] += (((f0 - sixteen * h0) * x0 + h0 * y0)
                                       + ((f1 - sixteen * h1) * x1 + h1 * y1)) + \
                                (((f2 - sixteen * h2) * x2 + h2 * y2)
                                 + ((f3 - sixteen * h3) * x3 + h3 * y3))
                _group_scales(ds, ms, gb, f16, R, has_m)
                if has_m:
                    for r in range(R):
                        acc[r] += ds[r] * blk[r] + ms[r] * xs[b]
                elif is_q40:
                    for r in range(R):
                        acc[r] += ds[r] * (blk[r] - eight * xs[b])
                else:
                    for r in range(R):
                        acc[r] += ds[r] * (blk[r] - c128 * xs[b])
            for r in range(R):
                out[0, g * R + r] = acc[r]

    groups_one_row.__qualname__ = f"qmatmul_forward_v6_one_row_{FORMATS[qt].name}"
    _groups_one_row = njit(parallel=True, **{**_JIT, "fastmath": FMA})(groups_one_row)

    def qmatmul_forward_v6(out, x, data, f16):
        # out: (N, O)  x: (N, K)  data: (G, K / 32, R * ts) uint8, group g's
        # block b: R scales, [R offsets], then code byte j of rows 0..R-1 for each j.
        # Per group and block: blk[r] = sum_j code[r, j] x[j] over lanes r (each x[j] one
        # broadcast, no sum across lanes), then acc[r] += d[r] blk[r] (+ m[r] sum(x_b)).
        N, K = x.shape
        G = data.shape[0]
        R = data.shape[2] // ts  # GROUP, read at run time: a constant 32 let LLVM unroll the
        # lane loops completely instead of vectorising them (scalar conversions for Q8_0)
        nb = K // QK
        t = f16.dtype.type
        xs = _block_sums(x, nb)
        sixteenth, sixteen, eight, c128 = t(0.0625), t(16), t(8), t(128)
        for g in prange(G):
            acc = np.zeros((N, R), dtype=f16.dtype)
            blk = np.empty((N, R), dtype=f16.dtype)
            lo = np.empty(R, dtype=f16.dtype)  # one code byte of the R rows, as floats
            hi = np.empty(R, dtype=f16.dtype)
            ds = np.empty(R, dtype=f16.dtype)
            ms = np.empty(R, dtype=f16.dtype)
            for b in range(nb):
                gb = data[g, b]
                blk[:, :] = 0
                if is_q8:
                    for j in range(QK):
                        c = gb[h * R + j * R:h * R + (j + 1) * R]
                        for r in range(R):
                            lo[r] = t(c[r])  # codes + 128 (kernels/quant.py)
                        for n in range(N):  # each byte converted once for all N rows of x
                            xj = x[n, b * QK + j]
                            for r in range(R):
                                blk[n, r] += lo[r] * xj
                else:
                    for j in range(QK // 2):
                        c = gb[h * R + j * R:h * R + (j + 1) * R]
                        for r in range(R):
                            # the byte as a float, split into its nibbles in float arithmetic:
                            # integer ops would widen to int64, whose conversion to float does
                            # not vectorise
                            cf = t(c[r])
                            hi[r] = np.floor(cf * sixteenth)
                            lo[r] = cf - sixteen * hi[r]
                        for n in range(N):
                            xl, xh = x[n, b * QK + j], x[n, b * QK + j + 16]
                            for r in range(R):
                                blk[n, r] += lo[r] * xl + hi[r] * xh
                _group_scales(ds, ms, gb, f16, R, has_m)
                for n in range(N):
                    if has_m:
                        for r in range(R):
                            acc[n, r] += ds[r] * blk[n, r] + ms[r] * xs[n, b]
                    elif is_q40:  # codes centred on 8: sum (q - 8) x = blk - 8 sum(x_b)
                        for r in range(R):
                            acc[n, r] += ds[r] * (blk[n, r] - eight * xs[n, b])
                    else:  # Q8_0, codes stored plus 128
                        for r in range(R):
                            acc[n, r] += ds[r] * (blk[n, r] - c128 * xs[n, b])
            for n in range(N):
                for r in range(R):
                    out[n, g * R + r] = acc[n, r]

    qmatmul_forward_v6.__qualname__ = f"qmatmul_forward_v6_{FORMATS[qt].name}"  # cache key
    return _groups_one_row, njit(parallel=True, **_JIT)(qmatmul_forward_v6)


# format -> (the one-row kernel, the several-rows kernel)
_V6 = {qt: _make_v6(qt) for qt in (Q8_0, Q4_0, Q4_1)}


def _make_v7(qt):
    # v7 compiled once per format, like v6; W in the row-group layout (kernels/quant.py).
    ts, h, is_q8, has_m, is_q40 = group_format(qt)

    def qmatmul_forward_v7(out, xp, data, f16):
        # out: (Np, O), xp: (Np, K) with Np a multiple of MR (x padded with zero rows);
        # data: (G, K / 32, R * ts) uint8. Per group g of R rows of W, V7_DEPTH of K at a
        # time: those weights decoded once into bp = W_g^T (depth, R), each row of R lanes in
        # one vectorised loop as in v6, then out[:, g R:(g + 1) R] += xp[:, depth] bp on the
        # micro-kernel, MR rows of xp at a time read in place, one sliver of nr columns of bp
        # at a time (its rows nr contiguous floats, R apart: the micro-kernel's packed-B
        # reading with row stride R). The panel stays in L1 between decoding and products.
        Np, K = xp.shape
        G = data.shape[0]
        O = out.shape[1]
        R = data.shape[2] // ts
        nr = NV * VECTOR_BYTES // xp.itemsize  # micro-kernel columns: 16 float32 on AVX2
        t = f16.dtype.type
        sixteenth, sixteen, eight, c128 = t(0.0625), t(16), t(8), t(128)
        for g in prange(G):
            bp = np.empty((V7_DEPTH, R), dtype=f16.dtype)  # W_g^T, V7_DEPTH rows of K at a time
            ds = np.empty(R, dtype=f16.dtype)
            ms = np.zeros(R, dtype=f16.dtype)
            for k0 in range(0, K, V7_DEPTH):
                kc = min(V7_DEPTH, K - k0)
                for bb in range(kc // QK):
                    b = k0 // QK + bb
                    gb = data[g, b]
                    _group_scales(ds, ms, gb, f16, R, has_m)
                    if is_q8:
                        for j in range(QK):
                            c = gb[h * R + j * R:h * R + (j + 1) * R]
                            row = bp[bb * QK + j]
                            for r in range(R):
                                row[r] = ds[r] * (t(c[r]) - c128)  # codes + 128
                    else:
                        for j in range(QK // 2):
                            c = gb[h * R + j * R:h * R + (j + 1) * R]
                            lo, hi = bp[bb * QK + j], bp[bb * QK + j + QK // 2]
                            for r in range(R):
                                cf = t(c[r])  # nibbles in float arithmetic, as in v6
                                q1 = np.floor(cf * sixteenth)
                                q0 = cf - sixteen * q1
                                if is_q40:
                                    lo[r] = ds[r] * (q0 - eight)
                                    hi[r] = ds[r] * (q1 - eight)
                                else:
                                    lo[r] = ds[r] * q0 + ms[r]
                                    hi[r] = ds[r] * q1 + ms[r]
                for s in range(R // nr):
                    for n0 in range(0, Np, MR):
                        micro(kc, xp, n0 * K + k0, K, 1, bp, s * nr, R, out,
                              n0 * O + g * R + s * nr, O, k0 > 0)

    qmatmul_forward_v7.__qualname__ = f"qmatmul_forward_v7_{FORMATS[qt].name}"  # cache key
    return njit(parallel=True, **_JIT)(qmatmul_forward_v7)


_V7 = {qt: _make_v7(qt) for qt in (Q8_0, Q4_0, Q4_1)}


def qmatmul_forward_v7(out, x, qw, f16):
    """v7: row groups decoded once into the micro-kernel's packed panel (the serial twin for
    small products); x padded to whole blocks of MR rows. W is grouped here first if it is
    not (a copy: the loader groups once); a weight that cannot be grouped runs v5."""
    qw = qw.to_groups()
    if not qw.grouped:
        return qmatmul_forward_v5(out, x, qw.blocks, qw.qtype, f16)
    N, K = x.shape
    Np = -(-N // MR) * MR
    xp, o = x, out
    if Np != N:  # the micro-kernel computes whole blocks of MR rows
        xp = np.zeros((Np, K), dtype=x.dtype)
        xp[:N] = x
        o = np.empty((Np, out.shape[1]), dtype=out.dtype)
    pick(_V7[qw.qtype], Np * out.shape[1] * K)(o, xp, _group_view(qw), f16)
    if o is not out:
        out[:] = o[:N]


def _qmatmul_forward_v8(out, x, data):
    # out: (N, O), x: (N, K) C-contiguous; data: (G, K / 32, R * TS) uint8 in the row-group
    # layout. Per group g: out[:, g R:(g + 1) R], up to ROWS rows of x per call of the IR
    # kernel (the group's rows as vector values, each code decoded once per call). N is 1
    # when decoding one sequence, a few for a server's batch. TS and group_dot_1..4 are the
    # globals _make_v8 gives each format's copy.
    N, K = x.shape
    G, nb = data.shape[0], data.shape[1]
    O = out.shape[1]
    R = data.shape[2] // TS  # noqa: F821
    xs = _block_sums(x, nb)
    for g in prange(G):
        off = g * nb * R * TS  # noqa: F821
        for n in range(0, N, ROWS):
            r = min(ROWS, N - n)
            a = (data, off, nb, x, n * K, K, xs, n * nb, nb, out, n * O + g * R, O)
            if r == 4:
                group_dot_4(*a)  # noqa: F821
            elif r == 3:
                group_dot_3(*a)  # noqa: F821
            elif r == 2:
                group_dot_2(*a)  # noqa: F821
            else:
                group_dot_1(*a)  # noqa: F821


_IR_TAG = source_tag(_groupdot)  # a new cache entry when the IR changes


def _make_v8(qt):
    # v8 compiled once per format: one copy of _qmatmul_forward_v8 whose globals name this
    # format's IR kernels (_groupdot.py) and block size. Globals, not closure variables: a
    # closure variable's pickle is part of Numba's on-disk cache key, and an intrinsic's
    # differs from one process to the next (the kernel was compiled again at every start).
    names = {f"group_dot_{n}": GROUP_DOT[qt][n] for n in range(1, ROWS + 1)}
    f = _pytypes.FunctionType(_qmatmul_forward_v8.__code__,
                              {**globals(), **names, "TS": group_format(qt)[0]},
                              f"qmatmul_forward_v8_{FORMATS[qt].name}_{_IR_TAG}")
    f.__qualname__ = f.__name__  # its own cache file
    return njit(parallel=True, **_JIT)(f)


_V8 = {qt: _make_v8(qt) for qt in (Q8_0, Q4_0, Q4_1)}


def qmatmul_forward_v8(out, x, qw, f16):
    """v8: v6's row groups with the inner product in LLVM IR (the serial twin for small
    products); W is grouped here first if it is not; a weight that cannot be grouped runs v5."""
    qw = qw.to_groups()
    if not qw.grouped:
        return qmatmul_forward_v5(out, x, qw.blocks, qw.qtype, f16)
    pick(_V8[qw.qtype], out.size * x.shape[1])(out, x, _group_view(qw))


def _group_view(qw):
    """A grouped weight's bytes as (G, K / 32, GROUP * bytes per block)."""
    ts = qw.format.type_size
    return qw.blocks.reshape(qw.shape[0] // GROUP, qw.blocks.shape[1] // ts, GROUP * ts)


def qmatmul_forward_v6(out, x, qw, f16):
    """v6: the kernel compiled for this format on the row-group layout (the serial twin for
    small products); W is grouped here first if it is not (a copy: the loader groups once)."""
    qw = qw.to_groups()
    if not qw.grouped:  # rows not a multiple of GROUP: no row groups
        return qmatmul_forward_v5(out, x, qw.blocks, qw.qtype, f16)
    one_row, rows = _V6[qw.qtype]
    if x.shape[0] == 1:  # decoding: each byte meets one x value, converted and used at once
        pick(one_row, out.shape[1] * x.shape[1])(out, x[0], _group_view(qw), f16)
    else:
        pick(rows, x.shape[0] * out.shape[1] * x.shape[1])(out, x, _group_view(qw), f16)


@njit(parallel=True, **_JIT)
def dequantize_rows(w, blocks, qt, f16):
    # w: (O, K) in f16's dtype <- every block of W (v4 and the backward's v3 take this path)
    O, K = w.shape
    ts, _ = _layout(qt)
    for o in prange(O):
        for b in range(K // QK):
            _unpack(w[o], b * QK, blocks[o], b * ts, qt, f16)


@njit(parallel=True, **_JIT)
def dequantize_groups(w, data, qt, f16):
    # w: (G * GROUP, K) <- data: (G, K / 32, GROUP * ts) uint8 in the row-group layout
    O, K = w.shape
    ts, h = _layout(qt)
    R = GROUP
    for g in prange(O // R):
        for b in range(K // QK):
            gb = data[g, b]
            for r in range(R):
                row = w[g * R + r]
                d = f16[np.int64(gb[2 * r]) | (np.int64(gb[2 * r + 1]) << 8)]
                m = d - d
                if qt == Q4_1:
                    m = f16[np.int64(gb[2 * R + 2 * r]) | (np.int64(gb[2 * R + 2 * r + 1]) << 8)]
                if qt == Q8_0:  # codes stored plus 128 (kernels/quant.py)
                    for j in range(QK):
                        row[b * QK + j] = d * (np.int32(gb[h * R + j * R + r]) - 128) + m
                else:
                    c = 8 if qt == Q4_0 else 0
                    for j in range(QK // 2):
                        q = np.int32(gb[h * R + j * R + r])
                        row[b * QK + j] = d * ((q & 15) - c) + m
                        row[b * QK + j + QK // 2] = d * ((q >> 4) - c) + m


def _panels(O, K):
    # row ranges of W whose float copy stays under PANEL_ELEMS elements (at least 32 rows, a
    # multiple of GROUP so that a panel of a grouped weight is whole groups)
    step = max(GROUP, PANEL_ELEMS // max(K, 1) // GROUP * GROUP)
    return [(o0, min(O, o0 + step)) for o0 in range(0, O, step)]


def _dequantize_panel(qw, o0, o1, dtype):
    """W[o0:o1] as a float (o1 - o0, K) array of ``dtype``, from either layout."""
    K = qw.shape[1]
    w = np.empty((o1 - o0, K), dtype=dtype)
    f16 = _F16[np.dtype(dtype)]
    if qw.grouped:
        data = qw.blocks.reshape(qw.shape[0] // GROUP, -1, GROUP * qw.format.type_size)
        pick(dequantize_groups, w.size)(w, data[o0 // GROUP:o1 // GROUP], qw.qtype, f16)
    else:
        pick(dequantize_rows, w.size)(w, qw.blocks[o0:o1], qw.qtype, f16)
    return w


def qmatmul_forward_v4(out, x, qw, f16):
    # W dequantized panel by panel into a float temporary, each panel then one GEMM on the pool
    for o0, o1 in _panels(qw.shape[0], x.shape[1]):
        out[:, o0:o1] = matmul_pool.matmul(x, _dequantize_panel(qw, o0, o1, x.dtype).T)  # (N, P)


# --------------------------------------------------------------------------- backward (dx)
@njit(**_JIT)
def qmatmul_backward_input_v1(dx, dy, blocks, qt, f16):
    # dx: (N, K) zeroed  dy: (N, O)  blocks: (O, ...) uint8
    N, K = dx.shape
    O = blocks.shape[0]
    ts, _ = _layout(qt)
    for n in range(N):
        for o in range(O):
            g = dy[n, o]
            for k in range(K):
                off = (k // QK) * ts
                d, m = _scales(blocks[o], off, qt, f16)
                dx[n, k] += g * (d * _code(blocks[o], off, qt, k % QK) + m)


@njit(parallel=True, **_JIT)
def qmatmul_backward_input_v2(dx, dy, blocks, qt, f16):
    N, K = dx.shape
    O = blocks.shape[0]
    ts, _ = _layout(qt)
    for b in prange(K // QK):
        k0 = b * QK
        w = np.empty(QK, dtype=f16.dtype)
        for o in range(O):
            _unpack(w, 0, blocks[o], b * ts, qt, f16)
            for n in range(N):
                g = dy[n, o]
                for j in range(QK):
                    dx[n, k0 + j] += g * w[j]


def qmatmul_backward_input_v3(dx, dy, qw, f16):
    # dx (N, K) = sum over panels of rows of W: dy[:, panel] (N, P) @ W[panel] (P, K)
    for o0, o1 in _panels(qw.shape[0], dx.shape[1]):
        w = _dequantize_panel(qw, o0, o1, dx.dtype)
        dx += matmul_pool.matmul(np.ascontiguousarray(dy[:, o0:o1]), w)


# --------------------------------------------------------------------------- rungs
def _float(a):
    a = np.ascontiguousarray(a)
    if a.dtype != np.float32 and a.dtype != np.float64:
        a = a.astype(np.float32)
    return a


def _check(qw, a, axis_len, what):
    if not isinstance(qw, QuantWeight) or qw.qtype not in MATMUL_TYPES:
        kind = FORMATS[qw.qtype].name if isinstance(qw, QuantWeight) else type(qw).__name__
        raise TypeError(f"quantized products take Q8_0, Q4_0 or Q4_1 weights, not {kind}")
    if a.ndim != 2 or a.shape[1] != axis_len:
        raise ValueError(f"{what} must be (N, {axis_len}) for a weight {qw.shape}, got {a.shape}")


def _forward(kernel, per_thread=False, whole=False):
    """qmatmul_forward(x, qw) -> y (N, O), running ``kernel(out, x, blocks, qtype, f16)`` on
    the blocks in the row layout (and the thread count after them for a kernel with
    ``per_thread`` buffers), or ``kernel(out, x, qw, f16)`` for a ``whole`` kernel that reads
    either layout itself."""
    def run(x, qw):
        x = _float(x)
        O, K = qw.shape
        _check(qw, x, K, "x")
        out = np.empty((x.shape[0], O), dtype=x.dtype)
        if out.size:
            f16 = _F16[x.dtype]
            if whole:
                kernel(out, x, qw, f16)
                return out
            k = kernel
            if hasattr(k, "targetoptions"):
                k = pick(k, x.shape[0] * O * K)
            args = (out, x, qw.row_blocks, qw.qtype, f16)
            if per_thread:
                args += (threads(k),)
            k(*args)
        return out
    run.__name__ = f"{kernel.__name__}_call"
    return run


def _backward_input(kernel, whole=False):
    """qmatmul_backward_input(dy, qw) -> dx (N, K), running ``kernel(dx, dy, blocks, ...)``
    (or ``kernel(dx, dy, qw, f16)`` when ``whole``)."""
    def run(dy, qw):
        dy = _float(dy)
        O, K = qw.shape
        _check(qw, dy, O, "dy")
        dx = np.zeros((dy.shape[0], K), dtype=dy.dtype)
        if dx.size:
            if whole:
                kernel(dx, dy, qw, _F16[dy.dtype])
                return dx
            k = kernel
            if hasattr(k, "targetoptions"):
                k = pick(k, dy.shape[0] * O * K)
            k(dx, dy, qw.row_blocks, qw.qtype, _F16[dy.dtype])
        return dx
    run.__name__ = f"{kernel.__name__}_call"
    return run


# Rows of x (or dy) from which forward v4 and backward v3 (the default) dequantize W by panels
# and call the GEMM; with fewer rows their ``fits`` declines and the registry runs the fused
# kernels (forward v5 on the row layout, backward v2). Grouped weights never get here in the
# forward: v8 takes them (with AVX2, v7 beyond V8_MAX_ROWS rows). Decoding (N = 1) reads each
# weight once, a prompt (N in the hundreds) is compute-bound. 16 is the pool GEMM's own MIN_ROWS; the
# crossover lies between measured points (bench_kernels.py --op qmatmul_forward --shapes tiny):
# at 1 row v6 runs 17-35x faster than v4; at 64 rows v4 takes 0.65-1.6x v6's time.
GEMM_MIN_ROWS = 16
FEW_ROWS = f"fewer than {GEMM_MIN_ROWS} rows"  # the GEMM rungs' reason below it


def _formats(a, qw):
    """Q8_0, Q4_0 or Q4_1 weights"""
    if not isinstance(qw, QuantWeight) or qw.qtype not in MATMUL_TYPES:
        kind = FORMATS[qw.qtype].name if isinstance(qw, QuantWeight) else type(qw).__name__
        return f"{kind} weight"
    return None


def _many_rows(a, qw):
    reason = _formats(a, qw)
    if reason is None and np.ndim(a) >= 1 and np.shape(a)[0] < GEMM_MIN_ROWS:
        return FEW_ROWS
    return reason


_many_rows.__doc__ = f"{_formats.__doc__} and {GEMM_MIN_ROWS} rows or more"


def _row_layout(a, qw):
    """Q8_0, Q4_0 or Q4_1 weights in GGUF's row layout (or not groupable)"""
    reason = _formats(a, qw)
    if reason is None and qw.grouped:
        return "a weight in row groups"
    return reason


def _grouped(a, qw):
    """Q8_0, Q4_0 or Q4_1 weights in row groups"""
    reason = _formats(a, qw)
    if reason is None and not qw.grouped:
        return "a weight in GGUF's row layout"
    return reason


def _grouped_rows(a, qw):
    """Q8_0, Q4_0 or Q4_1 weights in row groups and 2 rows or more"""
    reason = _grouped(a, qw)
    if reason is None and np.ndim(a) >= 1 and np.shape(a)[0] < 2:
        return "1 row"
    return reason


def _grouped_few_rows(a, qw):
    reason = _grouped(a, qw)
    if (reason is None and V8_MAX_ROWS is not None and np.ndim(a) >= 1
            and np.shape(a)[0] > V8_MAX_ROWS):
        return f"more than {V8_MAX_ROWS} rows"
    return reason


_grouped_few_rows.__doc__ = (_grouped.__doc__ if V8_MAX_ROWS is None else
                             f"{_grouped.__doc__} and at most {V8_MAX_ROWS} rows")


LADDERS = (
    Ladder("qmatmul_forward", "cpu", default=8, also=(7, 6, 4, 5),
           about="y = x W^T with W in Q8_0/Q4_0/Q4_1 blocks, dequantized inside the product",
           rungs=(
        Rung(1, _forward(qmatmul_forward_v1), "plain loops, each weight decoded alone, one thread",
             _formats),
        Rung(2, _forward(qmatmul_forward_v2),
             "prange over output rows, scale decoded once per block", _formats),
        Rung(3, _forward(qmatmul_forward_v3, per_thread=True),
             "tiles of 4 rows unpacked once, vectorised dot per x row", _formats),
        Rung(4, _forward(qmatmul_forward_v4, whole=True),
             "W dequantized by panels (parallel), each the pool's GEMM", _many_rows),
        Rung(5, _forward(qmatmul_forward_v5),
             "codes multiplied as unpacked, offsets through x's block sums", _row_layout),
        Rung(6, _forward(qmatmul_forward_v6, whole=True),
             f"row groups: {GROUP} rows side by side in SIMD lanes, no sums across lanes", _grouped),
        Rung(7, _forward(qmatmul_forward_v7, whole=True),
             "each row group decoded once into a packed panel, products on the micro-kernel",
             _grouped_rows),
        Rung(8, _forward(qmatmul_forward_v8, whole=True),
             "row groups as vector values in LLVM IR: codes widened as loaded, sums in registers",
             _grouped_few_rows),
    )),
    Ladder("qmatmul_backward_input", "cpu", default=3, also=(2,),
           about="dx = dy W for a frozen quantized W (LoRA on a quantized base)", rungs=(
        Rung(1, _backward_input(qmatmul_backward_input_v1), "plain loops, one thread", _formats),
        Rung(2, _backward_input(qmatmul_backward_input_v2),
             "prange over 32-column blocks, each block unpacked once", _formats),
        Rung(3, _backward_input(qmatmul_backward_input_v3, whole=True),
             "W dequantized by panels (parallel), each the pool's GEMM", _many_rows),
    )),
)
