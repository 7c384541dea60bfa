"""Float64 finite-difference gradient checks of every differentiable op (relative error <= 1e-6),
over random inputs, with broadcasting and non-contiguous (transposed) inputs."""

import numpy as np
import pytest

import minillm as M
import minillm.functional as F
from minillm.ops import composite
from minillm.testing import GradcheckError, gradcheck

RNG = np.random.default_rng(1234)
# the float64 checks hold the exact definitions to 1e-6 (tests/conftest.py's fixture); the fast
# kernels are compared with the reference separately (tests/kernels)
pytestmark = pytest.mark.usefixtures("reference_kernels")


def t(*shape, low=None, high=None, transposed=False):
    """A float64 leaf that requires grad; ``transposed`` gives a non-contiguous view."""
    if low is not None:
        a = RNG.uniform(low, high, size=shape[::-1] if transposed else shape)
    else:
        a = RNG.standard_normal(shape[::-1] if transposed else shape)
    if transposed:
        a = a.T
        assert not a.flags["C_CONTIGUOUS"]
    return M.Tensor(a, requires_grad=True)


def check(fn, *inputs):
    err = gradcheck(fn, *inputs)
    assert err <= 1e-6 + 1e-12, err


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((4, 3), (1,))])
def test_binary_broadcasting(name, shapes):
    a = t(*shapes[0])
    b = t(*shapes[1], low=0.5, high=2.0) if name == "div" else t(*shapes[1])
    check(BINARY[name], a, b)


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_transposed(name):
    a = t(4, 3, transposed=True)
    b = t(4, 3, low=0.5, high=2.0, transposed=True)
    check(BINARY[name], a, b)


def test_scalar_operands_keep_dtype_and_grad():
    a = t(3, 2)
    check(lambda a: 2.0 * a - 1 + a / 3.0 - (1.5 - a) + (2 / (a * a + 1)), a)
    x = M.tensor([1.0, 2.0])
    assert (x * 2.0).dtype == np.float32


UNARY = {
    "neg": (lambda x: -x, None),
    "exp": (lambda x: x.exp(), None),
    "log": (lambda x: x.log(), (0.5, 3.0)),
    "sqrt": (lambda x: x.sqrt(), (0.5, 3.0)),
    "tanh": (lambda x: x.tanh(), None),
    "sigmoid": (lambda x: x.sigmoid(), None),
    "relu": (lambda x: x.relu(), None),
    "gelu": (lambda x: x.gelu(), None),
    "abs": (lambda x: x.abs(), None),
    "pow_scalar": (lambda x: x**3, None),
    "pow_half": (lambda x: x**0.5, (0.5, 3.0)),
    "pow_square": (lambda x: x**2, None),
}


@pytest.mark.parametrize("name", list(UNARY))
@pytest.mark.parametrize("transposed", [False, True])
def test_unary(name, transposed):
    fn, rng = UNARY[name]
    x = t(5, 3, low=rng[0], high=rng[1], transposed=transposed) if rng else t(5, 3, transposed=transposed)
    if name in ("relu", "abs"):  # keep inputs away from the kink, where f is not differentiable
        x.data[np.abs(x.data) < 1e-2] = 0.5
    check(fn, x)


def test_pow_tensor_exponent():
    check(lambda a, b: a**b, t(3, 4, low=0.5, high=2.0), t(4, low=-1.0, high=2.0))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 6))])
def test_matmul_batched_broadcast(shapes):
    check(lambda a, b: a @ b, t(*shapes[0]), t(*shapes[1]))


def test_matmul_transposed_inputs():
    check(lambda a, b: a @ b, t(3, 4, transposed=True), t(4, 5, transposed=True))


def test_linear():
    check(lambda x, w, b: F.linear(x, w, b), t(2, 3, 4), t(5, 4), t(5))
    check(lambda x, w: F.linear(x, w), t(3, 4, transposed=True), t(5, 4))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("op", ["sum", "mean", "max", "var"])
def test_reductions(op, axis, keepdims):
    x = t(3, 4, 5)
    check(lambda x: getattr(x, op)(axis=axis, keepdims=keepdims), x)


def test_var_correction_matches_numpy():
    x = t(4, 6)
    np.testing.assert_allclose(x.var(axis=1).data, x.data.var(axis=1, ddof=1))
    np.testing.assert_allclose(x.var(axis=1, correction=0).data, x.data.var(axis=1))
    check(lambda x: x.var(axis=0, correction=0), x)


def test_shape_ops():
    x = t(2, 3, 4)
    check(lambda x: x.reshape(4, 6), x)
    check(lambda x: x.view(-1, 2), x)
    check(lambda x: x.transpose(0, 2), x)
    check(lambda x: x.permute(1, 2, 0), x)
    check(lambda x: x.unsqueeze(1).squeeze(1), x)
    check(lambda x: x.flatten(1), x)
    check(lambda x: x[:, 1:3].expand(5, 2, 2, 4), x)
    check(lambda x: x.T, t(3, 4, transposed=True))


@pytest.mark.parametrize(
    "index",
    [1, (slice(None), 2), (Ellipsis, slice(1, 3)), (0, slice(None, None, 2)), np.array([0, 2, 0, 1]),
     (np.array([1, 1, 0]), np.array([0, 3, 3]))],
)
def test_getitem(index):
    # repeated integer indices must scatter-ADD in the backward
    check(lambda x: x[index], t(3, 4))


def test_concat_stack_split():
    a, b, c = t(2, 3), t(2, 5), t(2, 3)
    check(lambda a, b: M.cat([a, b], axis=1), a, b)
    check(lambda a, c: M.stack([a, c], axis=1), a, c)
    check(lambda b: b.split(2, axis=1)[2] * 3 + b.split([1, 4], axis=-1)[1].sum(), b)


def test_where_and_masked_fill():
    a, b = t(3, 4), t(4)
    cond = RNG.random((3, 4)) > 0.5
    check(lambda a, b: M.where(cond, a, b), a, b)
    check(lambda a: a.masked_fill(cond, -2.0), a)
    out = a.masked_fill(cond, -2.0).data
    assert np.all(out[cond] == -2.0) and np.all(out[~cond] == a.data[~cond])


def test_embedding_repeated_ids_accumulate():
    w = t(7, 3)
    idx = np.array([[1, 2, 1], [6, 1, 0]])
    check(lambda w: F.embedding(idx, w), w)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_log_softmax(axis):
    check(lambda x: F.softmax(x, axis), t(3, 5))
    check(lambda x: F.log_softmax(x, axis), t(3, 5, transposed=True))


def test_cross_entropy_with_ignore_index():
    logits = t(2, 4, 7)
    targets = np.array([[1, 6, -100, 0], [3, -100, 2, 2]])
    check(lambda z: F.cross_entropy(z, targets), logits)
    # value: mean NLL over the 6 kept positions
    z = logits.data.reshape(-1, 7)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    keep = targets.reshape(-1) != -100
    want = -logp[keep, targets.reshape(-1)[keep]].mean()
    np.testing.assert_allclose(F.cross_entropy(logits, targets).item(), want, rtol=1e-12)


def test_cross_entropy_all_ignored_is_zero():
    z = t(3, 5)
    loss = F.cross_entropy(z, np.full(3, -100))
    loss.backward()
    assert loss.item() == 0.0 and np.all(z.grad == 0)


def test_layer_norm():
    check(lambda x, w, b: F.layer_norm(x, w, b), t(2, 3, 6), t(6), t(6))
    check(lambda x: F.layer_norm(x), t(4, 5, transposed=True))
    check(lambda x, w: F.layer_norm(x, w), t(3, 5), t(5))


def test_bias_gelu_matches_composite():
    x, b = t(3, 4, 5), t(5)
    check(lambda x, b: F.bias_gelu(x, b), x, b)
    np.testing.assert_allclose(F.bias_gelu(x, b).data, composite.bias_gelu(x, b).data, rtol=1e-12)


def test_dropout_train_and_eval():
    x = t(50, 40)
    gen = np.random.default_rng(0)
    y = F.dropout(x, 0.3, training=True, generator=gen)
    kept = y.data != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.7)
    assert F.dropout(x, 0.3, training=False) is x
    # gradient with the mask fixed by a re-seeded generator
    check(lambda x: F.dropout(x, 0.3, generator=np.random.default_rng(5)), t(6, 7))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tq", [5, 2])
def test_attention(causal, tq):
    q, k, v = t(2, 2, tq, 3), t(2, 2, 5, 3), t(2, 2, 5, 3)
    if tq > 5 and causal:
        return
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal), q, k, v)


def test_attention_fused_matches_composite():
    q, k, v = t(2, 3, 6, 4), t(2, 3, 6, 4), t(2, 3, 6, 4)
    fused = F.scaled_dot_product_attention(q, k, v, causal=True)
    full_mask = np.ones((6, 6), dtype=bool)
    twin = composite.attention(q, k, v, causal=True)
    np.testing.assert_allclose(fused.data, twin.data, rtol=1e-10, atol=1e-12)
    # the masked path (fused softmax on explicit scores): the same numbers, correct gradients
    masked = F.scaled_dot_product_attention(q, k, v, causal=True, mask=full_mask)
    np.testing.assert_allclose(masked.data, twin.data, rtol=1e-10, atol=1e-12)
    check(lambda q: F.scaled_dot_product_attention(q, k, v, causal=True, mask=full_mask), q)


@pytest.mark.parametrize("kernels", ["reference", "numba"])
@pytest.mark.parametrize("causal", [True, False])
def test_self_attention_from_fused_qkv(kernels, causal):
    # qkv (B, T, 3C) straight from the fused projection; n_head 2, head_dim 3
    M.set_kernels(kernels)
    qkv = t(2, 5, 18)
    check(lambda qkv: F.self_attention(qkv, 2, causal=causal), qkv)
    # the same numbers as splitting the heads by hand and calling the general op
    heads = qkv.reshape(2, 5, 3, 2, 3).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
    q, k, v = heads[0], heads[1], heads[2]
    want = F.scaled_dot_product_attention(q, k, v, causal=causal).permute(0, 2, 1, 3).reshape(2, 5, 6)
    np.testing.assert_allclose(F.self_attention(qkv, 2, causal=causal).data, want.data, rtol=1e-12,
                               atol=1e-12)


def test_self_attention_rejects_a_bad_qkv_width():
    with pytest.raises(M.MinillmError, match="3 \\* n_head"):
        F.self_attention(t(2, 5, 17), 2)


def test_cast():
    x = t(3, 2)
    y = x.to(dtype=np.float32)
    assert y.dtype == np.float32
    (y * 2.0).sum().backward()
    assert x.grad.dtype == np.float64 and np.all(x.grad == 2.0)


def test_gradcheck_reports_wrong_gradients():
    from minillm.autograd import Function

    class BadSquare(Function):
        def forward(self, x):
            self.saved = (x,)
            return x * x

        def backward(self, dy):
            return (dy * 3.0 * self.saved[0],)  # wrong: should be 2x

    with pytest.raises(GradcheckError, match=r"input 0 .* index"):
        gradcheck(lambda x: BadSquare.apply(x), t(3))
