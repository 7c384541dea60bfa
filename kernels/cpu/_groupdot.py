"""One row group of a quantized W times one row of x, written as LLVM IR through a Numba
intrinsic: the inner kernel of qmatmul v8 (decoding, N = 1).

Why IR and not Numba loops: in v6's loops each pass over four code bytes is a loop over the
group's 32 lanes of its own, which LLVM vectorises as a loop of 4 iterations (AVX2) preceded by
run-time checks that the lane arrays do not overlap, broadcasts of the x values and spills; that
set-up costs about as much as the work, and v6 stays at about 1 weight per cycle per core even
on a matrix that sits in L2. Here the group's 32 rows are one ``<32 x float>`` value from the
first code byte to the last block: the accumulators never leave registers, no lane loop, no
alias checks. Per code byte (32 rows): one 32-byte load; for Q4 one AND and one shift for the
two nibbles; ``uitofp`` to floats (LLVM: zero-extend and convert, 8 lanes at a time on AVX2);
one ``llvm.fma`` per nibble with a broadcast x value. The block's float16 scales (and Q4_1's
offsets) are converted by ``fpext <32 x half>`` (F16C's vcvtph2ps), not looked up one by one.

``group_dot_<format>(data, off, nb, x, xoff, xs, xsoff, out, ooff)``: for the row group whose
bytes start at data[off] (nb blocks of R * ts bytes, kernels/quant.py's row-group layout: R
float16 scales, [R float16 offsets], then code byte j of the R rows for each j), with x's
K = 32 nb values from x[xoff] and their block sums xs[xsoff + b]:
out[ooff + r] = sum over blocks b of d[b, r] * sum_j q[b, r, j] x[32 b + j] (+ m[b, r] xs[b])
with Q4_0's codes centred on 8 and Q8_0's stored plus 128 taken back through xs, as in v6.
x, xs and out share one float dtype (float32 or float64). Inlined into the calling kernel.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..quant import GROUP, Q4_0, Q4_1, Q8_0
from ._microkernel import VECTOR_BYTES

R = GROUP  # lanes: the rows of one group
QK = 32  # weights per block


def _make(qt):
    ts, h = {Q8_0: (34, 2), Q4_0: (18, 2), Q4_1: (20, 4)}[qt]
    nibbles = qt != Q8_0

    @intrinsic
    def group_dot(typingctx, data, off, nb, x, xoff, xs, xsoff, out, ooff):
        if not (isinstance(data, types.Array) and data.dtype == types.uint8):
            return None
        if not all(isinstance(t, types.Array) and t.dtype == x.dtype for t in (x, xs, out)):
            return None
        if x.dtype not in (types.float32, types.float64):
            return None
        if not all(isinstance(t, types.Integer) for t in (off, nb, xoff, xsoff, ooff)):
            return None
        i64t = types.int64
        sig = types.void(data, i64t, i64t, x, i64t, xs, i64t, out, i64t)

        def codegen(context, builder, signature, args):
            data_v, off_v, nb_v, x_v, xoff_v, xs_v, xsoff_v, out_v, ooff_v = args
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

            gp = ptr(data, data_v, off_v)  # i8*: the group's first block
            xp = ptr(x, x_v, xoff_v)
            sp = ptr(xs, xs_v, xsoff_v)
            op = ptr(out, out_v, ooff_v)
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

            def codes(bp, j, s):
                # code byte j of the slice's rows, each widened to 32 bits as it is loaded
                # (vpmovzxbd from memory: no shuffles to split a wider load)
                return builder.zext(vload(bp, h * R + j * R + s * vw, vb), vi)

            # the accumulators as allocas: mem2reg keeps them in registers across the loop
            acc = [cgutils.alloca_once_value(builder, zero) for _ in slices]
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                bp = builder.gep(gp, [builder.mul(b, ir.Constant(i64, R * ts))])
                xb = builder.gep(xp, [builder.mul(b, ir.Constant(i64, QK))])
                xj = [bcast(builder.load(builder.gep(xb, [ir.Constant(i64, j)])))
                      for j in range(QK)]
                s_b = bcast(builder.load(builder.gep(sp, [b])))  # sum of x over the block
                for s in slices:
                    # two partial sums: halves each chain of dependent FMAs
                    part = [zero, zero]
                    if nibbles:  # low nibble: weight j, high nibble: weight j + 16
                        for j in range(QK // 2):
                            c = codes(bp, j, s)
                            lo = builder.sitofp(builder.and_(c, ir.Constant(vi, [15] * vw)), vf)
                            hi = builder.sitofp(builder.lshr(c, ir.Constant(vi, [4] * vw)), vf)
                            part[0] = builder.call(fma, [lo, xj[j], part[0]])
                            part[1] = builder.call(fma, [hi, xj[j + QK // 2], part[1]])
                    else:
                        for j in range(QK):
                            c = builder.sitofp(codes(bp, j, s), vf)
                            part[j % 2] = builder.call(fma, [c, xj[j], part[j % 2]])
                    blk = builder.fadd(part[0], part[1])
                    d = builder.fpext(vload(bp, 2 * s * vw, vh), vf)
                    a = builder.load(acc[s])
                    if qt == Q4_1:  # w = d q + m: d (x . q) + m sum(x)
                        m = builder.fpext(vload(bp, 2 * R + 2 * s * vw, vh), vf)
                        a = builder.call(fma, [d, blk, a])
                        a = builder.call(fma, [m, s_b, a])
                    else:  # codes centred on 8 (Q4_0) or stored plus 128 (Q8_0)
                        centre = ir.Constant(vf, [8.0 if nibbles else 128.0] * vw)
                        a = builder.call(fma, [d, builder.fsub(blk, builder.fmul(centre, s_b)), a])
                    builder.store(a, acc[s])
            for s in slices:
                dst = builder.bitcast(builder.gep(op, [ir.Constant(i64, s * vw)]), vf.as_pointer())
                builder.store(builder.load(acc[s]), dst, align=width // 8)
            return context.get_dummy_value()

        return sig, codegen

    group_dot.__name__ = f"group_dot_{ {Q8_0: 'q8_0', Q4_0: 'q4_0', Q4_1: 'q4_1'}[qt]}"
    return group_dot


GROUP_DOT = {qt: _make(qt) for qt in (Q8_0, Q4_0, Q4_1)}
