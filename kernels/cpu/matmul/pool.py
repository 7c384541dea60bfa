"""Matmul v6: OpenBLAS's single-threaded GEMM run from Numba's thread pool, one block of rows
per thread (the default rung of the matmul ladder in ``__init__.py``).

out = a @ b, the contract of kernels/reference.py ``matmul``. The arithmetic is OpenBLAS's (the
Numba ladder v1-v5 reaches half its speed at best); only the threading changes hands.

Why: a multi-threaded OpenBLAS call hands part of its work to OpenBLAS's own worker thread,
which after the call busy-waits for the next one for 2^28 cycles (about 0.1 s) without yielding
the core. In a training step the next op is often a Numba kernel, whose second thread then
shares a core with that spinning worker. Here OpenBLAS runs single-threaded inside each call and
Numba's pool splits the rows of out between its threads, so a training step has one pool, whose
OpenMP threads spin briefly between kernels and then sleep (minillm/_env.py); the big products
run as fast as with OpenBLAS's own threads. (Measurements: benchmarks/README.md, "One thread
pool".)

Batched products (batch dims broadcast, as np.matmul) run one whole product per task. Products
under PARALLEL_MIN multiply-adds, and single matrices under MIN_ROWS rows, run as one
single-threaded ``a @ b``. ``fits`` sends to the reference what the BLAS cannot take (integer or
mixed dtypes, vectors, an OpenBLAS whose ILP64 CBLAS symbols are not found); matrices with no
unit stride and shapes that do not multiply also go to ``a @ b``, which copies them or raises
NumPy's error.
"""

import ctypes

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import _blas

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enums
PARALLEL_MIN = 1 << 22  # multiply-adds (M N K) below which one thread does the whole product
MIN_ROWS = 16  # fewer rows of out: a row split leaves a thread idle, and GEMM packs all of b
               # for one row (a (1, 384) x (384, 1152) product: 113 us, NumPy's gemv 36 us)


@intrinsic
def _gemm_call(typingctx, addr, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc):
    """cblas_?gemm(RowMajor, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc) for the
    ILP64 function at address ``addr`` (pointers as integers). The address is an argument, not
    a ctypes object: Numba types a ctypes function anew on every call (about 120 us)."""
    if not isinstance(alpha, types.Float) or beta != alpha:
        return None
    i8 = types.int64
    sig = types.void(i8, i8, i8, i8, i8, i8, alpha, i8, i8, i8, i8, alpha, i8, i8)

    def codegen(context, builder, signature, args):
        fn_addr, ta_v, tb_v, m_v, n_v, k_v, al, pa_v, lda_v, pb_v, ldb_v, be, pc_v, ldc_v = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        flt, vp = context.get_value_type(alpha), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, flt, vp, i64, vp, i64,
                                               flt, vp, i64])
        fn = builder.inttoptr(fn_addr, fnty.as_pointer())
        enum, ptr = (lambda v: builder.trunc(v, i32)), (lambda v: builder.inttoptr(v, vp))
        builder.call(fn, [ir.Constant(i32, ROW_MAJOR), enum(ta_v), enum(tb_v), m_v, n_v, k_v, al,
                          ptr(pa_v), lda_v, ptr(pb_v), ldb_v, be, ptr(pc_v), ldc_v])
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True, nogil=True)
def _gemm_rows(gemm, out, a, ta, lda, b, tb, ldb, parts):
    # out (M, N) row-major = op(a) @ op(b); rows of out split into ``parts`` blocks, one BLAS
    # call each. a[r0:] points at row r0 of op(a) whether a is stored transposed or not.
    M, K = a.shape
    N = b.shape[1]
    ldc = out.strides[0] // out.itemsize
    one, zero = out.dtype.type(1.0), out.dtype.type(0.0)
    step = (M + parts - 1) // parts
    for t in prange(parts):
        r0 = t * step
        r1 = min(M, r0 + step)
        if r1 > r0:
            _gemm_call(gemm, ta, tb, r1 - r0, N, K, one, a[r0:].ctypes.data, lda,
                       b.ctypes.data, ldb, zero, out[r0:].ctypes.data, ldc)


@njit(parallel=True, cache=True, nogil=True)
def _gemm_batch(gemm, out, a, aoff, ta, lda, b, boff, tb, ldb):
    # out (nb, M, N) C-contiguous; matrix t of op(a) starts aoff[t] bytes past a's data pointer
    # (broadcast batch dims have stride 0), likewise b. One whole product per task.
    nb, M, N = out.shape
    K = a.shape[-1]  # a is the (..., M, K) view; ta says how its matrices lie in memory
    one, zero = out.dtype.type(1.0), out.dtype.type(0.0)
    pa, pb, po = a.ctypes.data, b.ctypes.data, out.ctypes.data
    for t in prange(nb):
        _gemm_call(gemm, ta, tb, M, N, K, one, pa + aoff[t], lda, pb + boff[t], ldb, zero,
                   po + t * M * N * out.itemsize, N)


_fns = None


def _gemm_functions():
    """{dtype: address of cblas_?gemm} in the OpenBLAS NumPy loaded, or {} where none is found."""
    global _fns
    if _fns is None:
        _fns = {}
        lib = _blas.library()
        names = [("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"),  # ILP64: 64-bit integers
                 ("cblas_sgemm64_", "cblas_dgemm64_")]
        for sname, dname in names if lib is not None else []:
            if hasattr(lib, sname) and hasattr(lib, dname):
                for name, dtype in ((sname, np.float32), (dname, np.float64)):
                    _fns[np.dtype(dtype)] = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                break
    return _fns


def _operand(x):
    """(transpose flag, leading dimension) for a 2-D view the BLAS reads in place, else None."""
    isz = x.itemsize
    s0, s1 = x.strides
    if s1 == isz and s0 >= max(1, x.shape[1]) * isz and s0 % isz == 0:
        return NO_TRANS, s0 // isz
    if s0 == isz and s1 >= max(1, x.shape[0]) * isz and s1 % isz == 0:
        return TRANS, s1 // isz
    return None


def _offsets(x, batch):
    """Byte offset of each matrix of x broadcast to batch + (rows, cols), flattened."""
    xb = np.broadcast_to(x, batch + x.shape[-2:])
    off = np.zeros(batch, dtype=np.int64)
    for d, (n, st) in enumerate(zip(batch, xb.strides[:-2])):
        shape = [1] * len(batch)
        shape[d] = n
        off = off + np.arange(n, dtype=np.int64).reshape(shape) * st
    return off.reshape(-1)


def fits(a, b):
    """float32/float64 matrices of one dtype, with an ILP64 cblas_?gemm in NumPy's OpenBLAS"""
    if getattr(a, "ndim", 0) < 2 or getattr(b, "ndim", 0) < 2:
        return "a vector operand"
    if a.dtype != b.dtype:
        return f"{a.dtype} @ {b.dtype}"
    if a.dtype not in _gemm_functions():
        return f"{a.dtype} input" if _gemm_functions() else "no ILP64 cblas_?gemm found"
    return None


def matmul(a, b):
    """out = a @ b (batch dims broadcast) for inputs ``fits`` takes."""
    if fits(a, b) is not None or a.shape[-1] != b.shape[-2] or 0 in a.shape or 0 in b.shape:
        return a @ b
    gemm = _gemm_functions()[a.dtype]
    M, K = a.shape[-2:]
    N = b.shape[-1]
    oa, ob = _operand(a[(0,) * (a.ndim - 2)]), _operand(b[(0,) * (b.ndim - 2)])
    if oa is None or ob is None:
        return a @ b  # a matrix with no unit stride: NumPy copies it for the BLAS
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        return a @ b  # NumPy raises the error the caller expects
    nb = int(np.prod(batch))
    if nb * M * N * K < PARALLEL_MIN or (not batch and M < MIN_ROWS):
        with _blas.single_threaded():  # one thread: NumPy's own call (gemv for a vector)
            return a @ b
    out = np.empty(batch + (M, N), dtype=a.dtype)
    with _blas.single_threaded():
        if not batch:
            _gemm_rows(gemm, out, a, oa[0], oa[1], b, ob[0], ob[1], numba.get_num_threads())
        else:
            _gemm_batch(gemm, out.reshape(nb, M, N), a, _offsets(a, batch), oa[0], oa[1],
                        b, _offsets(b, batch), ob[0], ob[1])
    return out
