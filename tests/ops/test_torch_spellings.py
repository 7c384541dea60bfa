"""The ops added for PyTorch users (clamp, clone, square, std, norm, min, pow and matmul as
methods): float64 finite-difference gradient checks, and PyTorch's ``dim=``/``keepdim=`` giving
the same results as NumPy's ``axis=``/``keepdims=`` on every op that takes an axis."""

import numpy as np
import pytest

import minillm as M
import minillm.functional as F
from minillm.errors import MinillmError
from minillm.testing import gradcheck

RNG = np.random.default_rng(7)
pytestmark = pytest.mark.usefixtures("reference_kernels")


def t(*shape, low=None, high=None):
    a = RNG.standard_normal(shape) if low is None else RNG.uniform(low, high, size=shape)
    return M.Tensor(a, requires_grad=True)


def away_from(a, points, gap=0.05):
    """``a`` with entries within ``gap`` of any of ``points`` moved off them (kinks)."""
    for p in points:
        near = np.abs(a - p) < gap
        a[near] = p + np.where(a[near] >= p, gap, -gap)
    return a


def check(fn, *inputs):
    assert gradcheck(fn, *inputs) <= 1e-6 + 1e-12


def test_clamp_gradcheck_and_values():
    x = M.Tensor(away_from(RNG.standard_normal((4, 5)), (-0.3, 0.4)), requires_grad=True)
    check(lambda x: x.clamp(-0.3, 0.4), x)
    check(lambda x: x.clamp(min=-0.3), x)
    check(lambda x: M.clamp(x, max=0.4), x)
    np.testing.assert_array_equal(x.clamp(-0.3, 0.4).data, np.clip(x.data, -0.3, 0.4))
    # PyTorch passes the gradient at the bounds themselves
    b = M.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    b.clamp(0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(b.grad, [0.0, 1.0, 1.0])
    with pytest.raises(MinillmError):
        x.clamp()


def test_clone_copies_and_stays_in_the_graph():
    x = t(3, 2)
    check(lambda x: x.clone() * x, x)
    y = x.clone()
    y.data[0, 0] = 99.0
    assert x.data[0, 0] != 99.0 and y.grad_fn is not None


@pytest.mark.parametrize("fn", [
    lambda x: x.square(),
    lambda x: x.pow(3),
    lambda x: x.pow(M.Tensor(np.full((3, 4), 1.5))),
    lambda x: x.matmul(M.Tensor(np.arange(8.0).reshape(4, 2))),
    lambda x: M.matmul(x, x.t()),
])
def test_method_spellings_gradcheck(fn):
    check(fn, t(3, 4, low=0.5, high=2.0))


@pytest.mark.parametrize("kw", [{}, {"axis": 1}, {"dim": 0, "keepdim": True},
                                {"axis": (0, 2), "correction": 0}, {"dim": -1, "unbiased": False}])
def test_std_gradcheck_and_numpy(kw):
    x = t(3, 4, 5)
    check(lambda x: x.std(**kw), x)
    axis = kw.get("axis", kw.get("dim"))
    ddof = 0 if kw.get("correction") == 0 or kw.get("unbiased") is False else 1
    want = np.std(x.data, axis=axis, ddof=ddof, keepdims=kw.get("keepdim", False))
    np.testing.assert_allclose(x.std(**kw).data, want, rtol=1e-12)


@pytest.mark.parametrize("p", [2, 1, 3, 0.5, float("inf"), "fro"])
@pytest.mark.parametrize("dim", [None, 1])
def test_norm_gradcheck_and_numpy(p, dim):
    x = M.Tensor(away_from(RNG.standard_normal((3, 4)), (0.0,), 0.1), requires_grad=True)
    check(lambda x: x.norm(p, dim=dim), x)
    ord_ = 2 if p == "fro" else p
    want = np.linalg.norm(x.data.reshape(-1), ord_) if dim is None else \
        np.linalg.norm(x.data, ord_, axis=dim)
    np.testing.assert_allclose(x.norm(p, dim=dim).data, want, rtol=1e-12)


def test_min_gradcheck_and_values_indices():
    x = t(4, 5)
    check(lambda x: x.min(1), x)
    check(lambda x: x.min(dim=0, keepdim=True).values, x)
    v, i = x.min(dim=1)
    np.testing.assert_array_equal(v.data, x.data.min(1))
    np.testing.assert_array_equal(i.data, x.data.argmin(1))
    v, i = x.max(dim=0, keepdim=True)
    assert v.shape == (1, 5) and i.shape == (1, 5) and i.dtype == np.int64
    np.testing.assert_array_equal(i.data[0], x.data.argmax(0))
    assert x.max(0).shape == (5,)  # axis positionally: NumPy's meaning, the values only


AXIS_OPS = {
    "sum": lambda x, **k: x.sum(**k),
    "mean": lambda x, **k: x.mean(**k),
    "max": lambda x, **k: x.max(**k) if "dim" not in k else x.max(**k).values,
    "min": lambda x, **k: x.min(**k) if "dim" not in k else x.min(**k).values,
    "var": lambda x, **k: x.var(**k),
    "std": lambda x, **k: x.std(**k),
    "norm": lambda x, **k: x.norm(**k),
}


@pytest.mark.parametrize("name", list(AXIS_OPS))
@pytest.mark.parametrize("keep", [False, True])
def test_dim_keepdim_equal_axis_keepdims(name, keep):
    x = t(3, 4, 5)
    fn = AXIS_OPS[name]
    a = fn(x, axis=1, keepdims=keep)
    b = fn(x, dim=1, keepdim=keep)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.shape == ((3, 1, 5) if keep else (3, 5))


def test_dim_on_softmax_cat_stack_split_argmax():
    x = t(3, 4)
    np.testing.assert_array_equal(x.softmax(dim=0).data, x.softmax(axis=0).data)
    np.testing.assert_array_equal(F.log_softmax(x, dim=0).data, F.log_softmax(x, 0).data)
    assert M.cat([x, x], dim=1).shape == (3, 8) and M.stack([x, x], dim=2).shape == (3, 4, 2)
    assert [p.shape for p in x.split(2, dim=0)] == [(2, 4), (1, 4)]
    assert x.argmax(dim=1, keepdim=True).shape == (3, 1)
    np.testing.assert_array_equal(x.argmax(dim=1).data, x.data.argmax(1))
    assert x.unsqueeze(dim=0).shape == (1, 3, 4) and x.flatten(start_dim=0).shape == (12,)
    with pytest.raises(MinillmError, match="pass one of them"):
        x.sum(axis=0, dim=1)
