"""QuantLinear / QuantEmbedding (minillm.nn.quant, minillm.ops.quant): forward equals a Linear
holding the dequantized weight, dx equals its dx, nothing trains; float64 gradient check."""

import numpy as np
import pytest

import minillm as M
from minillm.errors import MinillmError
from minillm.kernels import quant as Q
from minillm.nn import Linear, Module
from minillm.nn.quant import QuantEmbedding, QuantLinear, named_quant_weights
from minillm.ops.quant import quant_linear
from minillm.tensor import Tensor
from minillm.testing import gradcheck

FORMATS = ["q8_0", "q4_0", "q4_1"]


def qweight(shape, qtype, seed=0):
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) / 4
    return Q.QuantWeight.from_float(w, qtype)


@pytest.mark.parametrize("kernels", ["reference", "numba"])
@pytest.mark.parametrize("qtype", FORMATS)
def test_forward_and_dx_equal_linear_with_dequantized_weight(qtype, kernels):
    prev = M.get_kernels()
    M.set_kernels(kernels)
    try:
        qw = qweight((33, 96), qtype)
        ql = QuantLinear(qw)
        lin = Linear(96, 33, bias=False)
        lin.weight.data = qw.dequantize()
        x = np.random.default_rng(1).standard_normal((2, 5, 96)).astype(np.float32)
        xa, xb = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
        ya, yb = ql(xa), lin(xb)
        assert ya.shape == (2, 5, 33) and ya.dtype == np.float32
        np.testing.assert_allclose(ya.data, yb.data, rtol=1e-5, atol=1e-5)
        dy = np.random.default_rng(2).standard_normal(ya.shape).astype(np.float32)
        (ya * Tensor(dy)).sum().backward()
        (yb * Tensor(dy)).sum().backward()
        np.testing.assert_allclose(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    finally:
        M.set_kernels(prev)


def test_nothing_trains_but_the_bias():
    ql = QuantLinear(qweight((7, 64), "q4_1"))
    assert list(ql.parameters()) == [] and ql.num_parameters() == 0
    lin = Linear(64, 7)
    qb = QuantLinear.from_linear(lin, "q8_0")
    assert [n for n, _ in qb.named_parameters()] == ["bias"]
    x = Tensor(np.ones((3, 64), np.float32))
    np.testing.assert_allclose(qb(x).data, lin(x).data, atol=0.05)
    y = ql(Tensor(np.ones((3, 64), np.float32)))
    assert not y.requires_grad  # no input needs grad, and the weight is not a Tensor


def test_float64_gradcheck():
    qw = qweight((7, 64), "q4_0", seed=3)
    x = Tensor(np.random.default_rng(4).standard_normal((3, 64)), requires_grad=True)
    assert x.dtype == np.float64
    gradcheck(lambda t: quant_linear(t, qw), x)


def test_embedding_rows_and_tied_head_and_export_names():
    class Tiny(Module):
        def __init__(self):
            super().__init__()
            qw = qweight((50, 32), "q8_0", seed=5)
            self.embed_tokens = QuantEmbedding(qw)
            self.lm_head = QuantLinear(qw)  # tied: the same blocks
            self.up = QuantLinear(qweight((64, 32), "q4_1", seed=6))

    m = Tiny()
    idx = np.array([[3, 49, 0], [3, 3, 7]])
    e = m.embed_tokens(idx)
    np.testing.assert_array_equal(e.data, m.embed_tokens.weight.dequantize()[idx])
    assert m.lm_head(e).shape == (2, 3, 50)
    assert [n for n, _ in named_quant_weights(m)] == ["embed_tokens.weight", "up.weight"]
    with pytest.raises(MinillmError, match="outside the embedding table"):
        m.embed_tokens(np.array([50]))
    with pytest.raises(MinillmError, match="expects 32"):
        m.up(Tensor(np.zeros((1, 31), np.float32)))
    with pytest.raises(TypeError, match="QuantWeight"):
        QuantLinear(np.zeros((4, 32)))


def test_layers_from_file_weights():
    from minillm.nn import Embedding
    from minillm.nn.quant import embedding_from, linear_from

    q = qweight((8, 64), "q4_1")
    assert isinstance(linear_from(q), QuantLinear)
    f16 = Q.QuantWeight.from_float(q.dequantize(), Q.F16)
    lin = linear_from(f16)  # no kernel for F16: a float Linear
    assert isinstance(lin, Linear) and lin.bias is None and lin.weight.dtype == np.float32
    np.testing.assert_array_equal(lin.weight.data, f16.dequantize())
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(linear_from(w).weight.data, w)
    assert isinstance(embedding_from(f16), QuantEmbedding)
    e = embedding_from(w)
    assert isinstance(e, Embedding) and np.array_equal(e(np.array([2])).data, w[[2]])


def test_quantize_linears_in_place():
    from minillm.nn import Sequential
    from minillm.nn.quant import quantize_linears

    class Block(Module):
        def __init__(self):
            super().__init__()
            self.up = Linear(64, 96, bias=False)
            self.down = Linear(96, 64)
            self.odd = Linear(40, 8)  # 40 is no whole number of blocks: stays float

    model = Sequential([Block(), Block()])
    x = Tensor(np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32))
    before = model[0].down(model[0].up(x)).data
    names = quantize_linears(model, "q8_0", skip=("1.down",))
    assert names == ["0.up", "0.down", "1.up"]
    assert isinstance(model[0].up, QuantLinear) and type(model[1].down) is Linear
    assert type(model[0].odd) is Linear
    assert [n for n, _ in model.named_parameters()][:1] == ["0.down.bias"]
    after = model[0].down(model[0].up(x)).data
    np.testing.assert_allclose(after, before, atol=0.02 * np.abs(before).max())


def test_q8_activations_round_x_in_inference_only():
    from minillm.kernels import reference as R
    from minillm.nn.quant import FusedProjections, set_activations

    class Pair(Module):
        def __init__(self):
            super().__init__()
            self.a = QuantLinear(qweight((64, 96), "q4_1", 1).to_groups())
            self.b = QuantLinear(qweight((32, 96), "q4_1", 2).to_groups())

    m = Pair()
    x = np.random.default_rng(3).standard_normal((5, 96)).astype(np.float32)
    float_y = m.a.forward_array(x)
    assert set_activations(m, "q8_0") == 2 and m.a.activations == "q8_0"
    y8 = m.a.forward_array(x)
    np.testing.assert_allclose(y8, R.qmatmul_q8_forward(x, m.a.weight), rtol=1e-5, atol=1e-5)
    assert not np.allclose(y8, float_y, rtol=1e-5, atol=1e-5)  # x was rounded
    fused = FusedProjections.fuse([m.a, m.b])  # one product, as the first layer's activations
    ya, yb = fused.forward_array(x)
    np.testing.assert_allclose(ya, y8, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(yb, R.qmatmul_q8_forward(x, m.b.weight), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.a(Tensor(x)).data, float_y, rtol=1e-5, atol=1e-5)  # with grads
    with M.no_grad():  # inference (an LM head called on a Tensor): rounded as decoding
        np.testing.assert_array_equal(m.a(Tensor(x)).data, y8)
    assert set_activations(m, "float32") == 2
    np.testing.assert_allclose(m.a.forward_array(x), float_y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="float32 or q8_0"):
        set_activations(m, "int8")


def test_q8_activations_flag_needs_quantized_layers():
    from minillm.cli_models import apply_activations

    with pytest.raises(MinillmError, match="holds none"):
        apply_activations(Linear(32, 32), "q8_0")
    apply_activations(Linear(32, 32), "float32")  # nothing to do, nothing to say
