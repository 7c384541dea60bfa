"""kernels/cpu/matmul.py: every version of the teaching matmul ladder against a @ b."""

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import matmul as K

# (M, K, N): odd sizes, none a multiple of the MB/KB/NB tiles or of the unroll by four
SHAPES = [(1, 1, 1), (7, 5, 33), (65, 130, 17), (70, 3, 515)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("version", sorted(K.VERSIONS))
def test_matmul_versions_match_reference(version, dtype):
    rng = np.random.default_rng(0)
    for M, Kd, N in SHAPES:
        a = rng.standard_normal((M, Kd)).astype(dtype)
        b = rng.standard_normal((Kd, N)).astype(dtype)
        want = R.matmul(a, b)
        got = K.matmul_version(version, a, b)
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.sqrt(Kd))


def test_matmul_takes_transposed_views():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((9, 13)).astype(np.float32).T  # (13, 9), not contiguous
    b = rng.standard_normal((9, 6)).astype(np.float32)
    np.testing.assert_allclose(K.matmul_version(4, a, b), a @ b, rtol=1e-4, atol=1e-4)


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
        K.matmul_v5(out, a, b)
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(out, a @ b, rtol=rtol, atol=rtol * np.sqrt(Kd))


def test_matmul_packed_empty_inner_dimension_gives_zeros():
    out = np.full((3, 4), np.nan, dtype=np.float32)
    K.matmul_v5(out, np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32))
    assert (out == 0).all()
