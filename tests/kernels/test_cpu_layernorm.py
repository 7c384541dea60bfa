"""kernels/cpu/layernorm.py's default rungs through their ladders, and float64 finite
differences of the reference backward (dx, dw, db). (Every version against the reference, with
and without w and b: tests/kernels/test_ladders.py.)"""

import zlib

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import layernorm as K

LADDERS = {lad.op: lad for lad in K.LADDERS}


def default(op):
    return LADDERS[op].rung(LADDERS[op].default).run


def assert_close(got, want, amplify=0.0):
    """amplify: extra absolute slack for dx, rstd * |dy w| * eps: rounding of g - mean(g)
    gets multiplied by rstd, which is 1/sqrt(eps) = 316 when C = 1 (var = 0)."""
    if want is None:
        assert got is None
        return
    rtol = 2e-4 if want.dtype == np.float32 else 1e-10
    atol = rtol * 0.1 * max(1.0, float(np.abs(want).max())) if want.size else 0.0
    atol += amplify * 4 * np.finfo(want.dtype).eps
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def make(shape, dtype, affine):
    N, C = shape
    rng = np.random.default_rng(zlib.crc32(repr((shape, affine)).encode()))
    x = (rng.standard_normal((N, C)) * 2 + 3).astype(dtype)  # mean far from 0, as after a residual
    w = (1 + 0.3 * rng.standard_normal(C)).astype(dtype) if affine in ("wb", "w") else None
    b = (0.3 * rng.standard_normal(C)).astype(dtype) if affine == "wb" else None
    dy = rng.standard_normal((N, C)).astype(dtype)
    return x, w, b, dy


def test_default_rungs_and_their_errors():
    x, w, b, dy = make((33, 65), np.float32, "wb")
    y, mean, rstd = default("layernorm_forward")(x, w, b)
    for g, r in zip((y, mean, rstd), R.layernorm_forward(x, w, b)):
        assert_close(g, r)
    for g, r in zip(default("layernorm_backward")(dy, x, w, mean, rstd),
                    R.layernorm_backward(dy, x, w, mean, rstd)):
        assert_close(g, r)
    with pytest.raises(ValueError):
        default("layernorm_forward")(x[None], w, b)  # (N, C) only
    with pytest.raises(ValueError):
        default("layernorm_forward")(x, w[:5], b)


@pytest.mark.parametrize("affine", ["wb", "none"])
def test_reference_backward_finite_differences(affine):
    x, w, b, r = make((3, 6), np.float64, affine)
    eps = 1e-5

    def loss(x_, w_, b_):
        return float(np.sum(r * R.layernorm_forward(x_, w_, b_, eps)[0]))

    def num(a, f):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + 1e-6
            fp = f()
            a[i] = old - 1e-6
            fm = f()
            a[i] = old
            g[i] = (fp - fm) / 2e-6
        return g

    _, mean, rstd = R.layernorm_forward(x, w, b, eps)
    dx, dw, db = R.layernorm_backward(r, x, w, mean, rstd)
    np.testing.assert_allclose(dx, num(x, lambda: loss(x, w, b)), rtol=1e-6, atol=1e-8)
    if affine == "wb":
        np.testing.assert_allclose(dw, num(w, lambda: loss(x, w, b)), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, num(b, lambda: loss(x, w, b)), rtol=1e-6, atol=1e-8)
    else:
        assert dw is None
        np.testing.assert_allclose(db, r.sum(axis=0), rtol=1e-12)  # the gradient a b would get
