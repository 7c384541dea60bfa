"""A row group of a quantized W times up to 8 rows of x rounded to 8-bit integers, written as
LLVM IR through a Numba intrinsic: the inner kernel of qmatmul_q8_forward v2 (AVX-512 VNNI).

Why integers: with float activations a server's 8-row decoding step is bound by the FMA units
(_groupdot.py: one FMA per weight per row of x, 16 lanes an instruction). Rounded to Q8_0
blocks (kernels/reference.py ``qmatmul_q8_forward``), x meets W's 4-bit or 8-bit codes as
integers, and ``vpdpbusd`` multiplies 64 unsigned code bytes by 64 signed x bytes and adds each
four products into one of 16 int32 lanes: four weights per lane per instruction, no conversion
of the codes to floats. The int32 sums of a block are exact (|sum| < 2^24: 32 x 255 x 127), so
the result of a row does not depend on how many rows of x share the call, nor on the order of
the integer additions: a batched step gives each row the bits it gets alone.

The row-group layout (kernels/quant.py) holds code byte j of the group's 32 rows side by side;
``vpdpbusd`` wants the four codes j..j+3 of one row side by side in a lane. One shuffle of two
64-byte loads (codes j, j+1 and j+2, j+3 of all 32 rows; ``vpermt2b`` on AVX-512 VBMI) gives
them for 16 rows. For Q4 one AND and one shift split each lane's bytes into the low nibbles
(weights j..j+3) and the high ones (weights j+16..j+19). Per block and 16 rows: 4 shuffles
(Q8_0: 8), then per row of x 8 ``vpdpbusd`` with x's four bytes broadcast from memory, one
conversion of the int32 sums to float and two or three float operations with the scales.

With more than 2 rows of x the group's two slices of 16 rows are two passes over its blocks
(both at once spilled registers: 8 rows 5.5 -> 8.4 ms over SmolLM2's matrices). The first pass
reads W from memory and prefetches 4 KiB ahead, as _groupdot.py; the second reads it from the
cache and prefetches the next group, which the first pass then finds there (8 rows, Q4_1,
bench_qmatmul_rows.py, three runs on a noisy VM: 9.8, 7.0, 8.2 ms without, 5.9, 5.8, 6.2 with).

The codes are unsigned (Q4: 0..15, Q8_0 stored plus 128), so the centres (8, 128) come back
through the integer sum of the row's block of x: each row's int32 sums start at
-centre * sum(q_x) (Q4_0, Q8_0); Q4_1's offsets m add m * d_x * sum(q_x).

``GROUP_DOT_Q8[format][n](data, off, nb, xq, xoff, xstep, xd, xs, xsoff, xsstep, out, ooff,
ostep)``: for the row group whose bytes start at data[off] (nb blocks of R * ts bytes) and for
each i < n the row of int8 x codes at xq[xoff + i xstep] (K = 32 nb), its float32 block scales
xd[xsoff + i xsstep + b] and int32 block sums xs[...]:
out[ooff + i ostep + r] = sum over blocks b of d[b, r] (xd_i[b] I[b, r, i]) (+ m[b, r]
(xd_i[b] xs_i[b])), I the exact integer sum of (q - centre) q_x over the block, accumulated in
float32 block by block in the blocks' order (one FMA, Q4_1 two). Inlined into the calling
kernel.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..quant import GROUP, Q4_0, Q4_1, Q8_0
from ._groupdot import PREFETCH, group_format, prefetch_lines

R = GROUP  # the rows of one group
QK = 32  # weights per block
LANES = 16  # int32 lanes of a 512-bit vector: rows per slice
ROWS = 8  # rows of x per call at most (8 rows: 16 float and int sums in registers of 32)


def _make(qt, n):
    ts, h, _, _, _ = group_format(qt)
    nibbles = qt != Q8_0

    @intrinsic
    def group_dot_q8(typingctx, data, off, nb, xq, xoff, xstep, xd, xs, xsoff, xsstep, out,
                     ooff, ostep):
        arrays = ((data, types.uint8), (xq, types.int8), (xd, types.float32),
                  (xs, types.int32), (out, types.float32))
        if not all(isinstance(a, types.Array) and a.dtype == t for a, t in arrays):
            return None
        ints = (off, nb, xoff, xstep, xsoff, xsstep, ooff, ostep)
        if not all(isinstance(t, types.Integer) for t in ints):
            return None
        i64t = types.int64
        sig = types.void(data, i64t, i64t, xq, i64t, i64t, xd, xs, i64t, i64t, out, i64t, i64t)

        def codegen(context, builder, signature, args):
            (data_v, off_v, nb_v, xq_v, xoff_v, xstep_v, xd_v, xs_v, xsoff_v, xsstep_v, out_v,
             ooff_v, ostep_v) = args
            set.add(builder.function.attributes, '"min-legal-vector-width"="512"')
            i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
            f32 = ir.FloatType()
            vf = ir.VectorType(f32, LANES)
            vi = ir.VectorType(i32, LANES)
            vb = ir.VectorType(i8, 4 * LANES)
            vh = ir.VectorType(ir.HalfType(), LANES)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf] * 3), f"llvm.fma.v{LANES}f32")
            dot = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vi, [vi] * 3), "llvm.x86.avx512.vpdpbusd.512")

            def ptr(arr_type, value, offset):
                a = cgutils.create_struct_proxy(arr_type)(context, builder, value=value)
                return builder.gep(a.data, [offset])

            def rows(p, step):
                return [builder.gep(p, [builder.mul(ir.Constant(i64, i), step)]) for i in range(n)]

            gp = ptr(data, data_v, off_v)  # i8*: the group's first block
            xp = rows(ptr(xq, xq_v, xoff_v), xstep_v)
            dp = rows(ptr(xd, xd_v, xsoff_v), xsstep_v)
            sp = rows(ptr(xs, xs_v, xsoff_v), xsstep_v)
            op = rows(ptr(out, out_v, ooff_v), ostep_v)
            zero = ir.Constant(vf, [0.0] * LANES)
            izero = ir.Constant(vi, [0] * LANES)
            slices = range(R // LANES)

            def splat(value, vty):
                u = ir.Constant(vty, ir.Undefined)
                v = builder.insert_element(u, value, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, u, ir.Constant(vi, [0] * LANES))

            def vload(p, byte_offset, vty):
                q = builder.gep(p, [ir.Constant(i64, byte_offset)])
                return builder.load(builder.bitcast(q, vty.as_pointer()), align=1)

            def codes(bp, s):
                # (int32 lanes of 4 codes each, offset in the block of x) for rows 16 s..16 s + 15:
                # codes j..j+3 of lane l from the two 64-byte loads holding codes j, j+1 and
                # j+2, j+3 of the group's 32 rows (byte u * 32 + r of the pair)
                mask = ir.Constant(ir.VectorType(i32, 4 * LANES),
                                   [u * R + s * LANES + lane for lane in range(LANES)
                                    for u in range(4)])
                for j in range(0, QK // 2 if nibbles else QK, 4):
                    a = vload(bp, h * R + j * R, vb)
                    b = vload(bp, h * R + (j + 2) * R, vb)
                    c = builder.bitcast(builder.shuffle_vector(a, b, mask), vi)
                    if nibbles:  # low nibbles: weights j..j+3; high: j+16..j+19
                        low = ir.Constant(vi, [0x0F0F0F0F] * LANES)
                        yield builder.and_(c, low), j
                        yield builder.and_(builder.lshr(c, ir.Constant(vi, [4] * LANES)), low), \
                            j + QK // 2
                    else:
                        yield c, j

            def x4(xb, j):  # x codes j..j+3 of one row's block, broadcast to every lane
                q = builder.gep(xb, [ir.Constant(i64, j)])
                return splat(builder.load(builder.bitcast(q, i32.as_pointer()), align=1), vi)

            def start(b, i):  # the row's int32 sums start at -centre * sum(q_x)
                if qt == Q4_1:
                    return izero
                s_b = builder.load(builder.gep(sp[i], [b]))
                centre = ir.Constant(i32, -8 if nibbles else -128)
                return splat(builder.mul(s_b, centre), vi)

            def total(bp, s, b, i, isum, acc):
                # acc + d (xd I) (+ m (xd sum(q_x))), one row of x, 16 rows of W
                d = builder.fpext(vload(bp, 2 * s * LANES, vh), vf)
                xd_b = builder.load(builder.gep(dp[i], [b]))
                scaled = builder.fmul(builder.sitofp(isum, vf), splat(xd_b, vf))
                acc = builder.call(fma, [d, scaled, acc])
                if qt == Q4_1:
                    m = builder.fpext(vload(bp, 2 * R + 2 * s * LANES, vh), vf)
                    s_b = builder.sitofp(builder.load(builder.gep(sp[i], [b])), f32)
                    acc = builder.call(fma, [m, splat(builder.fmul(xd_b, s_b), vf), acc])
                return acc

            def fetch_ahead(bp, ahead):  # as _groupdot.py's several rows
                prefetch_lines(builder, bp, ahead, R * ts)

            def block(b):
                return (builder.gep(gp, [builder.mul(b, ir.Constant(i64, R * ts))]),
                        [builder.gep(p, [builder.mul(b, ir.Constant(i64, QK))]) for p in xp])

            # n <= 2: every slice in flight (with one row, two int chains per slice: shorter
            # chains of dependent vpdpbusd); more rows: one slice at a time
            groups = [list(slices)] if n <= 2 else [[s] for s in slices]
            results = {}
            for group in groups:
                acc = {(s, i): cgutils.alloca_once_value(builder, zero)
                       for s in group for i in range(n)}
                with cgutils.for_range(builder, nb_v) as loop:
                    bp, xb = block(loop.index)
                    if n > 1 and group[0] == 0:  # the first pass over the group's blocks
                        fetch_ahead(bp, ir.Constant(i64, PREFETCH))
                    if n > 2 and group[0] == len(slices) - 1:  # the last pass (from cache):
                        fetch_ahead(bp, builder.mul(nb_v, ir.Constant(i64, R * ts)))  # next group
                    for s in group:
                        chains = 2 if n == 1 else 1
                        part = [[start(loop.index, i) if c == 0 else izero
                                 for c in range(chains)] for i in range(n)]
                        for k, (w, j) in enumerate(codes(bp, s)):
                            for i in range(n):
                                c = k % chains
                                part[i][c] = builder.call(dot, [part[i][c], w, x4(xb[i], j)])
                        for i in range(n):
                            isum = part[i][0] if chains == 1 else builder.add(*part[i])
                            a = acc[(s, i)]
                            builder.store(total(bp, s, loop.index, i, isum, builder.load(a)), a)
                results.update(acc)
            for (s, i), a in results.items():
                dst = builder.gep(op[i], [ir.Constant(i64, s * LANES)])
                builder.store(builder.load(a), builder.bitcast(dst, vf.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return group_dot_q8


# format -> (None, the kernel for 1 row, ..., for ROWS rows)
GROUP_DOT_Q8 = {qt: (None,) + tuple(_make(qt, n) for n in range(1, ROWS + 1))
                for qt in (Q8_0, Q4_0, Q4_1)}
