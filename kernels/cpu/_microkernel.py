"""The GEMM micro-kernel of matmul v5, written as LLVM IR through a Numba intrinsic.

Why IR and not Numba loops: the heart of every fast GEMM is an (MR x NR) block of C held in
vector registers for a whole pass over k, each step one broadcast of a[i, p] times one row of b
as whole vectors. Written as Numba loops over a local array, LLVM keeps the accumulators in
memory (or picks 256-bit vectors: Intel CPUs are tuned to "prefer 256-bit"), and the ladder's
v3/v4 stopped at 20-40 GFLOP/s per core. Here the vectors are explicit: MR x NV accumulators of
VW lanes, ``llvm.fma`` on whole vectors, and the function attribute "min-legal-vector-width" so
the backend keeps 512-bit vectors in zmm registers instead of splitting them in two.

With AVX-512, float32: VW = 16 lanes, NV = 2, MR = 12 -> a 12 x 32 block in 24 zmm
accumulators, plus 2 registers for the row of b and 1 for the broadcast (of 32). Per step of k:
2 vector loads, 12 broadcasts, 24 FMAs. On AVX2 (no AVX-512) the same kernel is built with
32-byte vectors and MR = 6 (12 ymm accumulators of 16). float64 halves VW (NR = 16).

``micro(kc, a, aoff, ars, acs, b, boff, brs, c, coff, ldc, accumulate)``:
c[coff + i * ldc + j] (+)= sum over p < kc of a[aoff + i * ars + p * acs] * b[boff + p * brs + j]
for i < MR, j < NR, offsets in elements from each array's data pointer (a packed panel, or a
matrix read in place through its strides). A packed panel of a (matmul/packed.py) has ars = 1,
acs = MR; a packed panel of b has brs = NR. Read in place, a may have any strides (each step
broadcasts MR single elements); b and c need NR contiguous elements per row (c is a whole
MR x NR block of the result, or a scratch tile the caller copies the edges from). With
``accumulate`` it adds to c, else it overwrites. Inlined into the calling Numba function.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return frozenset()


CPU_FLAGS = _cpu_flags()  # /proc/cpuinfo's flags ("avx512f", "avx512_vnni", ...); empty elsewhere
VECTOR_BYTES = 64 if "avx512f" in CPU_FLAGS else 32
MR = 12 if VECTOR_BYTES == 64 else 6  # rows of the register block
NV = 2  # vectors per row of the register block


def nr(itemsize):
    """Columns of the register block for an element size (32 float32 / 16 float64 on AVX-512)."""
    return NV * VECTOR_BYTES // itemsize


@intrinsic
def micro(typingctx, kc, a, aoff, ars, acs, b, boff, brs, c, coff, ldc, accumulate):
    if not all(isinstance(t, types.Array) and t.dtype == a.dtype for t in (a, b, c)):
        return None
    if not all(isinstance(t, types.Integer) for t in (kc, aoff, ars, acs, boff, brs, coff, ldc)):
        return None
    i64t = types.int64
    sig = types.void(i64t, a, i64t, i64t, i64t, b, i64t, i64t, c, i64t, i64t, types.boolean)

    def codegen(context, builder, signature, args):
        kc_v, a_v, aoff_v, ars_v, acs_v, b_v, boff_v, brs_v, c_v, coff_v, ldc_v, accumulate_v = args
        # keep 512-bit vectors whole (see the module docstring); a string attribute llvmlite's
        # whitelist does not list, so it goes into the set directly
        set.add(builder.function.attributes, f'"min-legal-vector-width"="{8 * VECTOR_BYTES}"')
        fty = context.get_data_type(a.dtype)
        width = a.dtype.bitwidth
        vw = VECTOR_BYTES * 8 // width
        vty = ir.VectorType(fty, vw)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{vw}f{width}")

        def data(arr_type, value):
            return cgutils.create_struct_proxy(arr_type)(context, builder, value=value).data

        ap = builder.gep(data(a, a_v), [aoff_v])
        bp = builder.gep(data(b, b_v), [boff_v])
        cp = builder.gep(data(c, c_v), [coff_v])
        zero = ir.Constant(vty, [0.0] * vw)
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(i32, vw), [0] * vw)
        # accumulators as allocas: LLVM's mem2reg turns them into registers carried by the loop
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)] for _ in range(MR)]

        def vload(ptr, offset):
            vptr = builder.bitcast(builder.gep(ptr, [ir.Constant(i64, offset)]), vty.as_pointer())
            return builder.load(vptr, align=width // 8)  # packed panels: element alignment only

        a_rows = [builder.mul(ir.Constant(i64, i), ars_v) for i in range(MR)]  # loop-invariant
        with cgutils.for_range(builder, kc_v) as loop:
            arow = builder.gep(ap, [builder.mul(loop.index, acs_v)])
            brow = builder.gep(bp, [builder.mul(loop.index, brs_v)])
            bvec = [vload(brow, j * vw) for j in range(NV)]
            for i in range(MR):
                s = builder.load(builder.gep(arow, [a_rows[i]]))
                sv = builder.shuffle_vector(builder.insert_element(undef, s, ir.Constant(i32, 0)), undef, splat)
                for j in range(NV):
                    builder.store(builder.call(fma, [sv, bvec[j], builder.load(acc[i][j])]), acc[i][j])
        def store(add):
            for i in range(MR):
                crow = builder.gep(cp, [builder.mul(ir.Constant(i64, i), ldc_v)])
                for j in range(NV):
                    dst = builder.bitcast(builder.gep(crow, [ir.Constant(i64, j * vw)]), vty.as_pointer())
                    val = builder.load(acc[i][j])
                    if add:
                        val = builder.fadd(builder.load(dst, align=width // 8), val)
                    builder.store(val, dst, align=width // 8)

        with builder.if_else(accumulate_v) as (then, otherwise):
            with then:
                store(True)
            with otherwise:
                store(False)
        return context.get_dummy_value()

    return sig, codegen
