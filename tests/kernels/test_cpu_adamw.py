"""kernels/cpu/adamw.py (every version) against the NumPy reference over several steps."""

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import adamw as K

DTYPES = [np.float32, np.float64]
SHAPES = [(1,), (7,), (33, 5), (7, 65), (4097,), (3, 5, 257)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("version", sorted(K.VERSIONS["adamw_step"]))
def test_matches_reference_over_steps(version, shape, dtype):
    rng = np.random.default_rng(len(shape) * 1000 + shape[-1])
    p = rng.standard_normal(shape).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    rp, rm, rv = p.copy(), m.copy(), v.copy()
    for step in range(1, 6):
        g = rng.standard_normal(shape).astype(dtype)
        hyper = (1e-2, 0.9, 0.95, 1e-8, 0.1 * (step % 2), step)
        K.run("adamw_step", version, p, g, m, v, *hyper)
        R.adamw_step(rp, g, rm, rv, *hyper)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in ((p, rp), (m, rm), (v, rv)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 0.1 * np.abs(want).max())


def test_wrapper_updates_in_place_and_rejects_copies():
    p = np.ones((4, 3), np.float32)
    g, m, v = np.full_like(p, 0.5), np.zeros_like(p), np.zeros_like(p)
    K.adamw_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    np.testing.assert_allclose(p, 0.9, rtol=1e-6)  # first step moves by lr * sign(g)
    assert np.all(m > 0) and np.all(v > 0)
    with pytest.raises(ValueError):
        K.adamw_step(np.ones((4, 6), np.float32)[:, ::2], g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 2)
