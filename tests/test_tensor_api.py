"""Tensor's PyTorch spellings: size(), numel(), dim(), grad_fn, t(), float(), the module-level
constructors (zeros_like, ones_like, full, rand, randn, ...) and inference_mode."""

import numpy as np
import pytest

import minillm as M
from minillm.errors import MinillmError


def test_size_is_pytorchs_and_numel_counts():
    x = M.zeros(2, 3, 5)
    assert x.size() == (2, 3, 5) == x.shape
    assert x.size(1) == 3 and x.size(-1) == 5
    assert x.numel() == 30 and x.dim() == 3 == x.ndim
    with pytest.raises(MinillmError):
        x.size(3)


def test_grad_fn_is_the_op_node_or_none():
    a = M.randn(2, 2, requires_grad=True)
    assert a.grad_fn is None  # a leaf
    y = a * 2.0
    assert y.grad_fn is not None and "Mul" in repr(y.grad_fn)
    with M.no_grad():
        assert (a * 2.0).grad_fn is None


def test_t_transposes_matrices_only():
    a = M.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(a.t().data, a.data.T)
    v = M.tensor([1.0, 2.0])
    assert v.t() is v
    with pytest.raises(MinillmError):
        M.zeros(2, 2, 2).t()


def test_scalar_conversions():
    assert float(M.tensor([2.5])) == 2.5 and int(M.tensor(3)) == 3
    with pytest.raises(MinillmError):
        float(M.zeros(2))


def test_like_constructors_and_random():
    a = M.tensor(np.ones((2, 3), dtype=np.float64))
    z, o = M.zeros_like(a), M.ones_like(a)
    assert z.shape == o.shape == (2, 3) and z.dtype == o.dtype == np.float64
    assert z.data.sum() == 0 and o.data.sum() == 6
    assert M.zeros_like(a, dtype=np.float32).dtype == np.float32
    f = M.full((2, 2), 7.0)
    assert f.dtype == np.float32 and (f.data == 7).all()
    assert M.full(3, 2).dtype == np.int64 and M.full_like(a, 1.5).dtype == np.float64
    M.manual_seed(3)
    r1, n1 = M.rand(4, 5), M.randn_like(a)
    M.manual_seed(3)
    r2, n2 = M.rand((4, 5)), M.randn_like(a)
    np.testing.assert_array_equal(r1.data, r2.data)  # seeded by manual_seed, as torch
    np.testing.assert_array_equal(n1.data, n2.data)
    assert (r1.data >= 0).all() and (r1.data < 1).all() and r1.dtype == np.float32
    assert M.rand_like(a).shape == (2, 3) and n1.dtype == np.float64
    assert M.zeros_like(a, requires_grad=True).requires_grad


def test_inference_mode_is_no_grad():
    a = M.randn(2, requires_grad=True)
    with M.inference_mode():
        assert not (a * 2).requires_grad
    with M.inference_mode(False):
        assert (a * 2).requires_grad

    @M.inference_mode()
    def f(x):
        return x * 3

    assert not f(a).requires_grad and M.is_grad_enabled()
