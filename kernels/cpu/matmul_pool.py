"""Matmul on Numba's thread pool: the BLAS's single-threaded GEMM, one block of rows per thread.

out = a @ b, the contract of kernels/reference.py ``matmul``; what the dispatcher runs for
matmul in the "auto" and "numba" modes. The arithmetic is still OpenBLAS's (the Numba ladder in
matmul.py reaches half its speed at best); only the threading changes hands.

Why: a multi-threaded OpenBLAS call hands part of its work to OpenBLAS's own worker thread,
which after the call busy-waits for the next one for 2^28 cycles (about 0.1 s) without yielding
the core (strace shows no sched_yield). In a training step the next op is often a Numba
kernel, whose second thread then shares a core with that spinning worker: measured at the
small config, attention v7 forward + backward took 45 ms right after such a matmul and 19-25 ms
alone. Letting OpenBLAS's worker sleep at once (OPENBLAS_THREAD_TIMEOUT=4) moved the loss into
the matmuls instead: waking a sleeping thread on an idle core of this VM costs 0.3-0.8 ms. Here
OpenBLAS runs single-threaded inside each call and Numba's pool splits the rows of out between
its threads, so a training step has one pool, whose OpenMP threads spin briefly between
kernels and then sleep (minillm/_env.py): the same attention took 23.6 ms right after such a
matmul, and the step's big products run as fast as with OpenBLAS's own threads (ratio 0.97-1.03
at the small config's shapes, alone).

Batched products (batch dims broadcast, as np.matmul) run one whole product per task. Inputs
the BLAS cannot take as they are (integer or mixed dtypes, matrices with no unit stride, an
OpenBLAS whose ILP64 CBLAS symbols are not found) go to ``a @ b``.
"""

import ctypes

import numba
import numpy as np
from numba import njit, prange

from . import _blas, _serial

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enums
PARALLEL_MIN = 1 << 22  # multiply-adds (M N K) below which one thread does the whole product


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
            gemm(ROW_MAJOR, ta, tb, r1 - r0, N, K, one, a[r0:].ctypes.data, lda,
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
        gemm(ROW_MAJOR, ta, tb, M, N, K, one, pa + aoff[t], lda, pb + boff[t], ldb, zero,
             po + t * M * N * out.itemsize, N)


_fns = None


def _gemm_functions():
    """{dtype: ctypes cblas_?gemm} from the OpenBLAS NumPy loaded, or {} where none is found."""
    global _fns
    if _fns is None:
        _fns = {}
        lib = _blas.library()
        names = [("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", ctypes.c_int64),
                 ("cblas_sgemm64_", "cblas_dgemm64_", ctypes.c_int64)]
        for sname, dname, blasint in names if lib is not None else []:
            if hasattr(lib, sname) and hasattr(lib, dname):
                for name, dtype, scalar in ((sname, np.float32, ctypes.c_float),
                                            (dname, np.float64, ctypes.c_double)):
                    fn = getattr(lib, name)
                    i, e, p = blasint, ctypes.c_int, ctypes.c_void_p
                    fn.argtypes = [e, e, e, i, i, i, scalar, p, i, p, i, scalar, p, i]
                    fn.restype = None
                    _fns[np.dtype(dtype)] = fn
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


def matmul(a, b):
    """out = a @ b (batch dims broadcast); float32/float64 on Numba's pool, else ``a @ b``."""
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.shape[-1] != b.shape[-2]:
        return a @ b
    gemm = _gemm_functions().get(a.dtype)
    if gemm is None or 0 in a.shape or 0 in b.shape:
        return a @ b
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
    out = np.empty(batch + (M, N), dtype=a.dtype)
    parallel = nb * M * N * K >= PARALLEL_MIN
    with _blas.single_threaded():
        if not batch:
            kernel = _gemm_rows if parallel else _serial.serial(_gemm_rows)
            parts = numba.get_num_threads() if parallel else 1
            kernel(gemm, out, a, oa[0], oa[1], b, ob[0], ob[1], parts)
        else:
            kernel = _gemm_batch if parallel else _serial.serial(_gemm_batch)
            kernel(gemm, out.reshape(nb, M, N), a, _offsets(a, batch), oa[0], oa[1],
                   b, _offsets(b, batch), ob[0], ob[1])
    return out
