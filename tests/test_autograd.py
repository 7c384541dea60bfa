"""The engine: graph building, accumulation, freeing, no_grad, errors, and a small MLP that
learns XOR-like data built only from minillm ops."""

import subprocess
import sys

import numpy as np
import pytest

import minillm as M
from minillm.errors import MinillmError


def test_gradient_accumulates_across_uses_and_calls():
    x = M.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x + x * 3.0).sum()  # dy/dx = 2x + 3, x used three times
    y.backward()
    np.testing.assert_allclose(x.grad, [5.0, 7.0, 9.0])
    (x * 2.0).sum().backward()  # a second graph adds to .grad, as in PyTorch
    np.testing.assert_allclose(x.grad, [7.0, 9.0, 11.0])


def test_shared_subexpression_diamond():
    x = M.tensor(2.0, requires_grad=True)
    a = x * 3.0
    y = a * a + a  # dy/dx = (2a + 1) * 3 = 39
    y.backward()
    assert x.grad == pytest.approx(39.0)


def test_leaf_grads_are_independent_arrays():
    a = M.tensor([1.0, 2.0], requires_grad=True)
    b = M.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad *= 10  # an optimizer scaling one gradient in place must not touch the other
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_second_backward_needs_retain_graph():
    x = M.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    x.grad = None
    z = (x.exp() * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad, 2 * (np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0]))), rtol=1e-6)


def test_no_grad_builds_no_graph():
    x = M.tensor([1.0], requires_grad=True)
    with M.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._ctx is None

    @M.no_grad()
    def f(t):
        return t * 3.0

    assert not f(x).requires_grad
    assert (x * 2.0).requires_grad


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(MinillmError, match="floating-point"):
        M.tensor([1, 2, 3], requires_grad=True)


def test_misuse_errors_name_the_shapes():
    a, b = M.randn(3, 4), M.randn(5, 6)
    with pytest.raises(MinillmError, match=r"\(3, 4\) with \(5, 6\)"):
        a @ b
    with pytest.raises(MinillmError, match=r"\(3, 4\) and \(5, 6\)"):
        a + b
    with pytest.raises(MinillmError, match="reshape"):
        a.reshape(5, 5)
    with pytest.raises(MinillmError, match="non-scalar"):
        M.randn(2, 2, requires_grad=True).exp().backward()


def test_backward_with_explicit_grad_and_detach():
    x = M.randn(2, 3, requires_grad=True)
    y = x * 2.0
    y.backward(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_allclose(x.grad, 2.0)
    assert not x.detach().requires_grad


def test_tensor_basics():
    x = M.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert x.shape == (2, 2) and x.ndim == 2 and x.numel() == 4 and x.size() == (2, 2) and x.dtype == np.float32
    assert M.tensor([1, 2]).dtype == np.int64
    assert x.sum().item() == 10.0
    assert isinstance(x.numpy(), np.ndarray)
    assert (x > 2.0).numpy().tolist() == [[False, False], [True, True]]


def test_import_needs_neither_numba_nor_cupy():
    code = "import sys, minillm; assert 'numba' not in sys.modules and 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mlp_learns_two_moons_from_primitive_ops():
    rng = np.random.default_rng(0)
    n = 400
    t = rng.uniform(0, np.pi, n)
    X = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1),
                        np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)]).astype(np.float32)
    X += rng.normal(0, 0.1, X.shape).astype(np.float32)
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int64)
    W1 = M.Tensor(rng.normal(0, 1.0, (2, 32)).astype(np.float32), requires_grad=True)
    b1 = M.zeros(32, requires_grad=True)
    W2 = M.Tensor(rng.normal(0, 0.3, (32, 2)).astype(np.float32), requires_grad=True)
    b2 = M.zeros(2, requires_grad=True)
    params = [W1, b1, W2, b2]
    x = M.tensor(X)
    for _ in range(300):  # full-batch gradient descent with momentum, written by hand
        logits = (x @ W1 + b1).tanh() @ W2 + b2
        loss = M.functional.cross_entropy(logits, y)
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:
            p.data -= 0.5 * p.grad
    acc = ((x @ W1 + b1).tanh() @ W2 + b2).numpy().argmax(1) == y
    assert acc.mean() >= 0.95, acc.mean()
