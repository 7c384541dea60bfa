"""kernels/cpu/gelu.py: any shape and huge inputs (no inf, no nan), the constants shared with the
reference, and float64 finite differences of the reference backwards. (Every version against
the reference: tests/kernels/test_ladders.py.)"""

import zlib

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import gelu as K

DTYPES = [np.float32, np.float64]
LADDERS = {lad.op: lad for lad in K.LADDERS}


def assert_close(got, want):
    rtol = 1e-4 if want.dtype == np.float32 else 1e-10
    atol = rtol * 0.1 * max(1.0, float(np.abs(want).max())) if want.size else 0.0
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def make(shape, dtype):
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.flat[: min(4, x.size)] = [-12.0, 12.0, 0.0, -4.5][: min(4, x.size)]  # tails and 0
    b = (0.5 * rng.standard_normal(shape[-1])).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, b, dy


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_shape_and_large_inputs(dtype):
    rng = np.random.default_rng(3)
    x = (4 * rng.standard_normal((2, 3, 4, 5))).astype(dtype)
    x[0, 0, 0, :3] = [-1e4, 1e4, -60.0]  # exp(-2u) far beyond range: no inf, no nan
    dy = rng.standard_normal(x.shape).astype(dtype)
    fwd, bwd = (LADDERS[op].rung(LADDERS[op].default).run for op in ("gelu_forward", "gelu_backward"))
    y, dx = fwd(x), bwd(dy, x)
    assert y.shape == x.shape and np.isfinite(y).all() and np.isfinite(dx).all()
    assert_close(y, R.gelu_forward(x))
    assert_close(dx, R.gelu_backward(dy, x))


def test_kernels_use_the_reference_constants():
    assert K.GELU_K is R.GELU_K and K.GELU_A is R.GELU_A


def _numgrad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def test_reference_backward_finite_differences():
    x, b, r = make((3, 7), np.float64)
    x[0, :4] = [-5.0, 5.0, 0.0, -1.5]
    num = _numgrad(lambda: float(np.sum(r * R.gelu_forward(x))), x)
    np.testing.assert_allclose(R.gelu_backward(r, x), num, rtol=1e-6, atol=1e-8)
    dx, db = R.bias_gelu_backward(r, x, b)

    def loss():
        return float(np.sum(r * R.bias_gelu_forward(x, b)))

    np.testing.assert_allclose(dx, _numgrad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, _numgrad(loss, b), rtol=1e-6, atol=1e-8)
