"""The chunked head + cross-entropy (minillm/ops/chunked_ce.py) equals its composite twin
(full logits, then the composite cross-entropy), in value and in the gradients of h and W, with
masked rows, several chunks (a last one shorter than the rest), float and quantized heads, under
the reference and the Numba kernels; and passes a float64 finite-difference gradient check."""

import numpy as np
import pytest

import minillm as M
from minillm.kernels.quant import QuantWeight
from minillm.ops.chunked_ce import linear_cross_entropy, linear_cross_entropy_composite
from minillm.testing import gradcheck

TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}
IGNORE = -100


@pytest.fixture(params=["reference", "auto"])
def kernels(request):
    prev = M.get_kernels()
    M.set_kernels(request.param)
    yield request.param
    M.set_kernels(prev)


def _data(dtype, N=23, C=64, V=37, seed=0, masked=(0, 4, 5, 11, 22)):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((N, C)).astype(dtype)
    w = (rng.standard_normal((V, C)) * 0.3).astype(dtype)
    t = rng.integers(0, V, N)
    t[list(masked)] = IGNORE
    return h, w, t


def _run(fn, h, w, t, w_grad=True, **kw):
    ht = M.Tensor(h.copy(), requires_grad=True)
    wt = M.Tensor(w.copy(), requires_grad=True) if isinstance(w, np.ndarray) and w_grad else (
        M.Tensor(w.copy()) if isinstance(w, np.ndarray) else w)
    loss = fn(ht, wt, t, IGNORE, **kw)
    loss.backward()
    return loss.item(), ht.grad, getattr(wt, "grad", None)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("chunk_rows", [1, 5, None])
def test_float_head_matches_twin(kernels, dtype, chunk_rows):
    h, w, t = _data(dtype)
    loss, dh, dw = _run(linear_cross_entropy, h, w, t, chunk_rows=chunk_rows)
    loss2, dh2, dw2 = _run(linear_cross_entropy_composite, h, w, t)
    np.testing.assert_allclose(loss, loss2, **TOL[dtype])
    np.testing.assert_allclose(dh, dh2, **TOL[dtype])
    np.testing.assert_allclose(dw, dw2, **TOL[dtype])
    assert not dh[[0, 4, 5, 11, 22]].any()  # masked rows: no logits, zero gradient
    assert dh.dtype == dtype and dw.dtype == dtype


@pytest.mark.parametrize("qtype", ["q8_0", "q4_1"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_quantized_head_matches_twin(kernels, qtype, dtype):
    h, w, t = _data(dtype, N=29, C=96, V=41, seed=1)
    qw = QuantWeight.from_float(w.astype(np.float32), qtype)
    loss, dh, _ = _run(linear_cross_entropy, h, qw, t, chunk_rows=4)
    loss2, dh2, _ = _run(linear_cross_entropy_composite, h, qw, t)
    np.testing.assert_allclose(loss, loss2, **TOL[dtype])
    np.testing.assert_allclose(dh, dh2, **TOL[dtype])


def test_frozen_float_head_gets_no_gradient():
    h, w, t = _data(np.float64)
    _, dh, dw = _run(linear_cross_entropy, h, w, t, w_grad=False, chunk_rows=3)
    _, dh2, _ = _run(linear_cross_entropy_composite, h, w, t, w_grad=False)
    assert dw is None
    np.testing.assert_allclose(dh, dh2, **TOL[np.float64])


def test_every_row_masked_gives_zero():
    h, w, t = _data(np.float64)
    t[:] = IGNORE
    loss, dh, dw = _run(linear_cross_entropy, h, w, t, chunk_rows=4)
    assert loss == 0.0 and not dh.any() and not dw.any()


def test_batched_hidden_states():
    """(B, T, C) hidden states and (B, T) targets, as the model passes them."""
    h, w, t = _data(np.float64, N=21, masked=(0, 4, 5, 11, 20))
    h3, t3 = h.reshape(3, 7, -1), t.reshape(3, 7)
    loss, dh, _ = _run(linear_cross_entropy, h3, w, t3, chunk_rows=2)
    loss2, dh2, _ = _run(linear_cross_entropy_composite, h3, w, t3)
    assert dh.shape == (3, 7, h.shape[1])
    np.testing.assert_allclose(loss, loss2, **TOL[np.float64])
    np.testing.assert_allclose(dh, dh2, **TOL[np.float64])


@pytest.mark.parametrize("quant", [False, True], ids=["float", "q8_0"])
def test_gradcheck(quant):
    h, w, t = _data(np.float64, N=9, C=32, V=13, seed=2, masked=(1, 6))
    ht = M.Tensor(h, requires_grad=True)
    if quant:
        qw = QuantWeight.from_float(w.astype(np.float32), "q8_0")
        gradcheck(lambda a: linear_cross_entropy(a, qw, t, IGNORE, chunk_rows=2), ht)
    else:
        wt = M.Tensor(w, requires_grad=True)
        gradcheck(lambda a, b: linear_cross_entropy(a, b, t, IGNORE, chunk_rows=2), ht, wt)


def test_shape_mistakes_are_one_sentence():
    h, w, t = _data(np.float64)
    with pytest.raises(M.MinillmError, match="features"):
        linear_cross_entropy(M.Tensor(h[:, :10]), M.Tensor(w), t)
    with pytest.raises(M.MinillmError, match="targets"):
        linear_cross_entropy(M.Tensor(h), M.Tensor(w), t[:-1])
