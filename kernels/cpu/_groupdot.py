"""A row group of a quantized W times up to 4 rows of x, written as LLVM IR through a Numba
intrinsic: the inner kernel of qmatmul v8 (decoding: one row of x, or a server's few).

Why IR and not Numba loops: in v6's loops each pass over four code bytes is a loop over the
group's 32 lanes of its own, which LLVM vectorises as a loop of 4 iterations (AVX2) preceded by
run-time checks that the lane arrays do not overlap, broadcasts of the x values and spills; that
set-up costs about as much as the work, and v6 stays at about 1 weight per cycle per core even
on a matrix that sits in L2. Here the group's 32 rows are R / vw machine vectors (vw lanes:
8 float32 on AVX2) held as values from the first code byte to the last block: the sums never
leave registers, no lane loop, no alias checks. Per code byte of vw rows: one load that widens
the bytes to 32-bit lanes (vpmovzxbd from memory: widening a 32-byte load instead cost a
shuffle per 8 lanes); for Q4 one AND and one shift for the two nibbles; a conversion to
floats; one ``llvm.fma`` per nibble with a broadcast x value. The block's float16 scales (and
Q4_1's offsets) are converted by ``fpext <vw x half>`` (F16C's vcvtph2ps), not looked up one
by one.

For a few rows of x (a server's batch) each code byte is decoded once and multiplied into
every row's sums: ``GROUP_DOT[format][n]`` takes n = 1..ROWS rows at once. With one row the
group's R / vw vectors are all in flight in each block (two partial sums each: shorter chains
of dependent FMAs); with n rows one vector of lanes at a time, two partial sums per row in
registers (a block's 32 FMAs per row as two chains of 16: one chain kept 4 rows waiting on FMA
latency, 8 rows 30 ms per pass over SmolLM2's matrices against 25 with two) and each row's
total, read once per block. More rows per call gained nothing on AVX2's 16 vector registers
(8 rows in one call: 21 ms, as in two calls of 4).

``GROUP_DOT[format][n](data, off, nb, x, xoff, xstep, xs, xsoff, xsstep, out, ooff, ostep)``:
for the row group whose bytes start at data[off] (nb blocks of R * ts bytes, kernels/quant.py's
row-group layout: R float16 scales, [R float16 offsets], then code byte j of the R rows for
each j), and for each i < n the row of x at x[xoff + i xstep] (K = 32 nb values) with its
block sums at xs[xsoff + i xsstep + b]:
out[ooff + i ostep + r] = sum over blocks b of d[b, r] sum_j q[b, r, j] x_i[32 b + j]
(+ m[b, r] xs_i[b]), Q4_0's codes centred on 8 and Q8_0's stored plus 128 taken back through
xs, as in v6. Offsets count elements from each array's data pointer (C-contiguous arrays); x,
xs and out share one float dtype (float32 or float64). Inlined into the calling kernel.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..quant import GROUP, Q4_0, Q4_1, Q8_0
from ._microkernel import VECTOR_BYTES

R = GROUP  # lanes: the rows of one group
QK = 32  # weights per block
ROWS = 4  # rows of x per call at most
# Bytes ahead of the block being decoded that a call for several rows of x prefetches (every
# cache line of that block's size, one block at a time). The groups of a matrix lie end to
# end, so this reaches into the next group; at 4 to 16 rows the decoding and multiply-adds of a
# block take about as long as reading it from memory, and the hardware prefetcher alone let
# the two alternate. SmolLM2's 120 layer matrices, Q4_1, ms per pass (bench_qmatmul_rows.py
# --versions 8, Zen 4, 2 threads, three interleaved pairs without / with): 4 rows 8.5 / 7.4,
# 7.8 / 7.4, 7.0 / 5.8; 8 rows 13.0 / 11.7, 13.2 / 11.7, 11.3 / 10.1; 16 rows 21.4 / 20.6,
# 27.6 / 20.4, 19.8 / 18.8; Q8_0 8 rows 14.8 / 12.1, 20.7 / 14.4. One row (bound by memory
# either way) and 512 rows (bound by the FMA units) gained nothing, and a one-row call does
# without it.
PREFETCH = 4096
# With AVX-512 a group is two slices of 16 rows, two passes over its blocks: the first reads
# them from memory, the second from the cache, and that one prefetches the next group, which
# the first pass then finds there. 8 rows, ms per pass over the 120 matrices (three alternating
# pairs without / with, a noisy hour): Q4_1 11.6 / 11.1, 11.1 / 10.1, 10.6 / 10.9; Q8_0 14.9 /
# 12.7, 13.5 / 12.5, 13.9 / 12.2. (qmatmul_q8's kernel does the same, _groupdot_q8.py.)


def prefetch_lines(builder, p, ahead, nbytes):
    """IR: prefetch (read, into every cache level, data) each 64-byte line of the nbytes at
    p + ahead (p an i8 pointer, ahead an i64 value)."""
    i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
    prefetch = cgutils.get_or_insert_function(  # i8p prints "ptr" where the IR is opaque
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
        "llvm.prefetch.p0" if str(i8p) == "ptr" else "llvm.prefetch.p0i8")
    for line in range(0, nbytes, 64):
        q = builder.gep(p, [builder.add(ahead, ir.Constant(i64, line))])
        builder.call(prefetch, [q, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


def group_format(qt):
    """(bytes per block, bytes before the codes, is Q8_0, has offsets (Q4_1), is Q4_0) of a
    row-group block per row: the constants the row-group kernels are compiled with."""
    ts, h = (34, 2) if qt == Q8_0 else ((18, 2) if qt == Q4_0 else (20, 4))
    return ts, h, qt == Q8_0, qt == Q4_1, qt == Q4_0


def _make(qt, n):
    ts, h, _, _, _ = group_format(qt)
    nibbles = qt != Q8_0

    @intrinsic
    def group_dot(typingctx, data, off, nb, x, xoff, xstep, xs, xsoff, xsstep, out, ooff, ostep):
        if not (isinstance(data, types.Array) and data.dtype == types.uint8):
            return None
        if not all(isinstance(t, types.Array) and t.dtype == x.dtype and t.layout == "C"
                   for t in (x, xs, out)):
            return None
        if x.dtype not in (types.float32, types.float64):
            return None
        ints = (off, nb, xoff, xstep, xsoff, xsstep, ooff, ostep)
        if not all(isinstance(t, types.Integer) for t in ints):
            return None
        i64t = types.int64
        sig = types.void(data, i64t, i64t, x, i64t, i64t, xs, i64t, i64t, out, i64t, i64t)

        def codegen(context, builder, signature, args):
            (data_v, off_v, nb_v, x_v, xoff_v, xstep_v, xs_v, xsoff_v, xsstep_v, out_v, ooff_v,
             ostep_v) = args
            # keep 512-bit vectors whole on AVX-512 (see _microkernel.py)
            set.add(builder.function.attributes, f'"min-legal-vector-width"="{8 * VECTOR_BYTES}"')
            fty = context.get_data_type(x.dtype)
            width = x.dtype.bitwidth
            vw = VECTOR_BYTES * 8 // width  # lanes of one machine vector: R / vw slices
            i32, i64 = ir.IntType(32), ir.IntType(64)
            vf = ir.VectorType(fty, vw)
            vb = ir.VectorType(ir.IntType(8), vw)
            vi = ir.VectorType(i32, vw)
            vh = ir.VectorType(ir.HalfType(), vw)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf] * 3), f"llvm.fma.v{vw}f{width}")

            def ptr(arr_type, value, offset):
                a = cgutils.create_struct_proxy(arr_type)(context, builder, value=value)
                return builder.gep(a.data, [offset])

            def rows(p, step):  # the n rows' pointers
                return [builder.gep(p, [builder.mul(ir.Constant(i64, i), step)]) for i in range(n)]

            gp = ptr(data, data_v, off_v)  # i8*: the group's first block
            xp = rows(ptr(x, x_v, xoff_v), xstep_v)
            sp = rows(ptr(xs, xs_v, xsoff_v), xsstep_v)
            op = rows(ptr(out, out_v, ooff_v), ostep_v)
            undef = ir.Constant(vf, ir.Undefined)
            splat0 = ir.Constant(vi, [0] * vw)
            zero = ir.Constant(vf, [0.0] * vw)
            slices = range(R // vw)

            def bcast(value):
                v = builder.insert_element(undef, value, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, undef, splat0)

            def vload(p, byte_offset, vty):
                q = builder.gep(p, [ir.Constant(i64, byte_offset)])
                return builder.load(builder.bitcast(q, vty.as_pointer()), align=1)

            def scalar(p, index):
                return bcast(builder.load(builder.gep(p, [index])))

            def decoded(bp, s):
                # (float vector, x index) pairs of the slice's codes in one block: each code
                # byte of vw rows widened to 32 bits as it is loaded (vpmovzxbd from memory,
                # no shuffles to split a wider load), nibbles split by one AND and one shift
                for j in range(QK // 2 if nibbles else QK):
                    c = builder.zext(vload(bp, h * R + j * R + s * vw, vb), vi)
                    if nibbles:  # low nibble: weight j, high nibble: weight j + 16
                        yield builder.sitofp(builder.and_(c, ir.Constant(vi, [15] * vw)), vf), j
                        yield builder.sitofp(builder.lshr(c, ir.Constant(vi, [4] * vw)), vf), \
                            j + QK // 2
                    else:
                        yield builder.sitofp(c, vf), j

            def total(bp, s, b, blk, a, sp_i):
                # a + the block's scales applied to its sums blk of one row
                d = builder.fpext(vload(bp, 2 * s * vw, vh), vf)
                s_b = scalar(sp_i, b)  # sum of the row's x over the block
                if qt == Q4_1:  # w = d q + m: d (x . q) + m sum(x)
                    m = builder.fpext(vload(bp, 2 * R + 2 * s * vw, vh), vf)
                    return builder.call(fma, [m, s_b, builder.call(fma, [d, blk, a])])
                centre = ir.Constant(vf, [8.0 if nibbles else 128.0] * vw)  # Q4_0, Q8_0
                return builder.call(fma, [d, builder.fsub(blk, builder.fmul(centre, s_b)), a])

            def fetch_ahead(bp, ahead):
                prefetch_lines(builder, bp, ahead, R * ts)

            def block(b):
                return (builder.gep(gp, [builder.mul(b, ir.Constant(i64, R * ts))]),
                        [builder.gep(p, [builder.mul(b, ir.Constant(i64, QK))]) for p in xp])

            if n == 1:  # every slice in flight, two partial sums each (shorter FMA chains)
                acc = [cgutils.alloca_once_value(builder, zero) for _ in slices]  # mem2reg
                with cgutils.for_range(builder, nb_v) as loop:
                    bp, (xb,) = block(loop.index)
                    for s in slices:
                        part = [zero, zero]
                        for k, (w, j) in enumerate(decoded(bp, s)):
                            xj = scalar(xb, ir.Constant(i64, j))
                            part[k % 2] = builder.call(fma, [w, xj, part[k % 2]])
                        blk = builder.fadd(part[0], part[1])
                        builder.store(total(bp, s, loop.index, blk, builder.load(acc[s]), sp[0]),
                                      acc[s])
                results = [[acc[s]] for s in slices]
            else:  # one slice at a time, each decoded code used for all n rows
                results = []
                for s in slices:
                    acc = [cgutils.alloca_once_value(builder, zero) for _ in range(n)]
                    with cgutils.for_range(builder, nb_v) as loop:
                        bp, xb = block(loop.index)
                        if s == 0:  # the first pass over this group's blocks
                            fetch_ahead(bp, ir.Constant(i64, PREFETCH))
                        if s == len(slices) - 1 and s > 0:  # the last pass: the next group
                            fetch_ahead(bp, builder.mul(nb_v, ir.Constant(i64, R * ts)))
                        blk = [[zero, zero] for _ in range(n)]  # two partial sums a row
                        for k, (w, j) in enumerate(decoded(bp, s)):
                            for i in range(n):
                                xj = scalar(xb[i], ir.Constant(i64, j))
                                blk[i][k % 2] = builder.call(fma, [w, xj, blk[i][k % 2]])
                        for i in range(n):
                            b_i = builder.fadd(blk[i][0], blk[i][1])
                            builder.store(total(bp, s, loop.index, b_i,
                                                builder.load(acc[i]), sp[i]), acc[i])
                    results.append(acc)
            for s, acc in zip(slices, results):
                for i, a in enumerate(acc):
                    dst = builder.gep(op[i], [ir.Constant(i64, s * vw)])
                    builder.store(builder.load(a), builder.bitcast(dst, vf.as_pointer()),
                                  align=width // 8)
            return context.get_dummy_value()

        return sig, codegen

    return group_dot


# format -> (None, the kernel for 1 row, ..., for ROWS rows)
GROUP_DOT = {qt: (None,) + tuple(_make(qt, n) for n in range(1, ROWS + 1))
             for qt in (Q8_0, Q4_0, Q4_1)}
