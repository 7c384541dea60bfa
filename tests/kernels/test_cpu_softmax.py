"""kernels/cpu/softmax.py's default rungs on any rank and extreme inputs, kernels/cpu/_fastmath.py,
and float64 finite-difference checks of the reference softmax/log-softmax backwards. (Every
version against the reference: tests/kernels/test_ladders.py.)"""

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import _fastmath as FM
from minillm.kernels.cpu import softmax as K

DTYPES = [np.float32, np.float64]
LADDERS = {lad.op: lad for lad in K.LADDERS}


def default(op):
    return LADDERS[op].rung(LADDERS[op].default).run


def assert_close(got, want):
    """|got - want| <= atol + rtol |want|, atol scaled by the largest |want|."""
    rtol = 1e-4 if want.dtype == np.float32 else 1e-10
    atol = rtol * 0.1 * max(1.0, float(np.abs(want).max())) if want.size else 0.0
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def numgrad(f, x, eps=1e-6):
    """Central differences of the scalar f at every entry of x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = f(x)
        x[i] = old - eps
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_rank_and_extremes(dtype):
    rng = np.random.default_rng(1)
    x = (5 * rng.standard_normal((2, 3, 17))).astype(dtype)
    x[0, 0, :4] = -np.inf  # masked entries (attention) must give exactly 0 probability
    x[1, 2, 3] = 80.0  # large logits must not overflow
    y = default("softmax_forward")(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all(y[0, 0, :4] == 0)
    assert_close(y, R.softmax_forward(x))
    x = np.where(np.isinf(x), dtype(-30), x)
    assert_close(default("log_softmax_forward")(x), R.log_softmax_forward(x))
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert_close(default("softmax_backward")(dy, y), R.softmax_backward(dy, y))
    ly = R.log_softmax_forward(x)
    assert_close(default("log_softmax_backward")(dy, ly), R.log_softmax_backward(dy, ly))


def test_rejects_integer_input():
    with pytest.raises(TypeError):
        default("softmax_forward")(np.arange(6).reshape(2, 3))


# --------------------------------------------------------------------------- _fastmath
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-7), (np.float64, 1e-15)])
def test_fast_exp_accuracy_and_limits(dtype, tol):
    from numba import njit

    @njit(fastmath=True, error_model="numpy")
    def apply(out, x):
        for i in range(x.size):
            out[i] = FM.fast_exp(x[i])

    hi = 88.0 if dtype == np.float32 else 700.0
    x = np.linspace(-80.0, hi, 100_003).astype(dtype)
    ref = np.exp(x.astype(np.float64))
    got = np.empty_like(x)
    apply(got, x)  # compiled path
    assert got.dtype == dtype
    assert np.max(np.abs(got - ref) / ref) < tol
    assert np.max(np.abs(FM.fast_exp(x) - ref) / ref) < tol  # NumPy path
    tails = np.array([-np.inf, -1e30, -1000.0, 0.0], dtype=dtype)
    out = np.empty_like(tails)
    apply(out, tails)
    np.testing.assert_array_equal(out, [0, 0, 0, 1])
    np.testing.assert_array_equal(FM.fast_exp(tails), [0, 0, 0, 1])


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-7), (np.float64, 1e-15)])
def test_fast_tanh_accuracy(dtype, tol):
    from numba import njit

    @njit(fastmath=True, error_model="numpy")
    def apply(out, x):
        for i in range(x.size):
            out[i] = FM.fast_tanh(x[i])

    x = np.concatenate([np.linspace(-30, 30, 100_001), [0.0, 1e-30, -1e-8]]).astype(dtype)
    got = np.empty_like(x)
    apply(got, x)
    ref = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(got - ref)) < tol
    assert np.max(np.abs(FM.fast_tanh(x) - ref)) < tol
    small = np.abs(x) < 0.5  # relative accuracy near 0, where 1 - exp(-2|x|) would cancel
    rel = np.abs(got[small] - ref[small]) / np.maximum(np.abs(ref[small]), 1e-300)
    assert np.max(rel) < 10 * tol


# --------------------------------------------------------------------------- reference gradients
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_reference_backward_finite_differences(name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5))
    w = rng.standard_normal((3, 5))  # loss = sum(w * f(x)), so dL/dy = w
    fwd, bwd = getattr(R, f"{name}_forward"), getattr(R, f"{name}_backward")
    num = numgrad(lambda z: float(np.sum(w * fwd(z))), x)
    np.testing.assert_allclose(bwd(w, fwd(x)), num, rtol=1e-6, atol=1e-8)
