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
