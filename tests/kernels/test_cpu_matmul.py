"""kernels/cpu/matmul/: transposed views, v5's packing edges and K = 0, and v6 (the default:
OpenBLAS on Numba's pool) on batches, strides, what it hands to NumPy, and its threshold.
(Every version against the reference on odd 2-D shapes: tests/kernels/test_ladders.py.)"""

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import _blas
from minillm.kernels.cpu import matmul as K
from minillm.kernels.cpu.matmul import packed, pool

(LADDER,) = K.LADDERS


def test_matmul_takes_transposed_views():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((9, 13)).astype(np.float32).T  # (13, 9), not contiguous
    b = rng.standard_normal((9, 6)).astype(np.float32)
    for v in LADDER.versions:
        np.testing.assert_allclose(LADDER.rung(v).run(a, b), a @ b, rtol=1e-4, atol=1e-4)


# v5's register block is MR x NR (12 x 32 float32 with AVX-512, 6 x 16 with AVX2) and its panels
# KC = 256 deep: these cross every edge (M, N below and above a block, K over one panel)
PACKED_SHAPES = [(1, 1, 1), (5, 7, 3), (13, 300, 37), (31, 257, 65), (250, 513, 47)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_packed_edges_and_strides(dtype):
    rng = np.random.default_rng(2)
    for M, Kd, N in PACKED_SHAPES:
        a = rng.standard_normal((Kd, M)).astype(dtype).T  # transposed views: packing reads any strides
        b = rng.standard_normal((N, Kd)).astype(dtype).T
        out = np.full((M, N), np.nan, dtype=dtype)  # every element must be written
        packed.matmul_v5(out, a, b)
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(out, a @ b, rtol=rtol, atol=rtol * np.sqrt(Kd))


def test_matmul_packed_empty_inner_dimension_gives_zeros():
    out = np.full((3, 4), np.nan, dtype=np.float32)
    packed.matmul_v5(out, np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32))
    assert (out == 0).all()


# ----------------------------------------------------------------- v6, the default

POOL_CASES = [((7, 5), (5, 33)), ((65, 130), (130, 17)), ((2, 3, 5, 7), (7, 4)),
              ((5, 7), (2, 3, 7, 4)), ((2, 1, 9, 7), (1, 3, 7, 11)), ((4, 33, 17), (4, 17, 9))]


def _stored_transposed(x):
    return x.swapaxes(-1, -2).copy().swapaxes(-1, -2)  # same values, column-major matrices


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooled_matmul_matches_numpy(dtype, kernel_threads, monkeypatch):
    monkeypatch.setattr(pool, "PARALLEL_MIN", 0 if kernel_threads == "parallel" else 1 << 62)
    rng = np.random.default_rng(3)
    for sa, sb in POOL_CASES:
        a = rng.standard_normal(sa).astype(dtype)
        b = rng.standard_normal(sb).astype(dtype)
        want = R.matmul(a, b)
        for x in (a, _stored_transposed(a)):
            for y in (b, _stored_transposed(b)):
                got = pool.matmul(x, y)
                assert got.shape == want.shape and got.dtype == want.dtype
                rtol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 10)


def test_pooled_matmul_hands_what_the_blas_cannot_take_to_numpy():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 10)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    cases = [(a[:, ::2], b), (a.astype(np.int64)[:, :5], b.astype(np.int64)),
             (a[:, :5], b.astype(np.float64)), (a[:0, :5], b)]
    for x, y in cases:
        got = pool.matmul(x, y)
        want = x @ y
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError):
        pool.matmul(a, b)  # (6, 10) @ (5, 3): NumPy's own error
    for x, y in cases[1:3]:  # int and mixed dtypes: the rung's fits sends them to the reference
        assert pool.fits(x, y) is not None and LADDER.rung(6).reason_not(x, y) is not None
    with pytest.raises(ValueError):
        LADDER.rung(1).run(a, b)  # v1-v5 take 2-D (M, K) @ (K, N) only


def test_pooled_matmul_leaves_the_blas_thread_count_as_it_was():
    if not _blas.available():
        pytest.skip("no OpenBLAS whose thread count can be read")
    before = _blas.num_threads()
    pool.matmul(np.ones((300, 200), np.float32), np.ones((200, 100), np.float32))
    assert _blas.num_threads() == before
