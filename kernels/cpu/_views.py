"""``flat(a, n)``: the n elements from a Numba array's first element as a 1-D C-contiguous array
sharing its memory (compiled code only).

Why: Numba types a strided view (a KV cache's first T positions, ``cache[:, :, :T]``) as layout
'A', and loops over an 'A' array do not vectorise (it may have any stride). A kernel that knows
its rows are contiguous takes ``flat(a, span)`` and slices rows out of it by element offsets
computed from ``a.strides``: C-contiguous 1-D slices, which LLVM vectorises (3x faster dots on
rows of 64 floats). ``np.lib.stride_tricks.as_strided`` does the same in NumPy but costs ~10 us
a call from Python and, inside Numba, returns layout 'A' again.

The caller guarantees that a's elements lie within its first n elements from its data pointer
(non-negative strides, n = the offset of its last element + 1). The result keeps a's memory
alive like any view (it borrows a's meminfo).
"""

from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic


@intrinsic
def flat(typingctx, a, n):
    if not isinstance(a, types.Array) or not isinstance(n, types.Integer):
        return None
    ret = types.Array(a.dtype, 1, "C")

    def codegen(context, builder, sig, args):
        src = context.make_array(a)(context, builder, args[0])
        out = context.make_array(ret)(context, builder)
        itemsize = context.get_constant(types.intp,
                                        context.get_abi_sizeof(context.get_data_type(a.dtype)))
        count = context.cast(builder, args[1], n, types.intp)
        context.populate_array(out, data=src.data, shape=cgutils.pack_array(builder, [count]),
                               strides=cgutils.pack_array(builder, [itemsize]),
                               itemsize=itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, ret, out._getvalue())

    return ret(a, n), codegen
