"""Every fused op equals its composite twin (minillm/ops/composite.py), forward and backward.

The fused op is called the way the layers call it (``minillm.functional``), under the reference
kernels and under "auto" (the Numba kernels where Numba is installed). Both sides get the same
inputs and the same random upstream gradient r (L = sum(out * r)); the outputs and the
gradients of every input must agree within a tolerance that depends on the dtype. The shapes
are odd on purpose: no multiple of any tile or block size.
"""

import numpy as np
import pytest

import minillm as M
import minillm.functional as F
from minillm.ops import composite as C
from minillm.testing import gradcheck

# |fused - twin| <= atol + rtol * |twin|, per dtype. float32 allows for the different order of
# the sums (kernels accumulate in blocks, the twins in NumPy's pairwise order).
TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.fixture(params=["reference", "auto"])
def kernels(request):
    prev = M.get_kernels()
    M.set_kernels(request.param)
    yield request.param
    M.set_kernels(prev)


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param


def leaves(rng, dtype, *shapes):
    return [M.Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in shapes]


def run(fn, inputs, r):
    """fn's output and the gradients of every input for L = sum(fn(*inputs) * r)."""
    for x in inputs:
        x.grad = None
    out = fn(*inputs)
    (out * M.Tensor(r.astype(out.dtype))).sum().backward()
    return out.data, [x.grad for x in inputs]


def assert_twins(fused, twin, inputs, dtype, seed=0):
    """fused(*inputs) equals twin(*inputs) in value and in the gradient of every input."""
    out = twin(*inputs)
    r = np.random.default_rng(seed).standard_normal(out.shape)
    got, got_grads = run(fused, inputs, r)
    want, want_grads = run(twin, inputs, r)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(got, want, **TOL[dtype], err_msg="forward")
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert g is not None and w is not None, f"input {i} got no gradient"
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **TOL[dtype], err_msg=f"gradient of input {i}")


@pytest.mark.parametrize("shape,axis", [((7, 13), -1), ((3, 5, 11), -1), ((6, 9), 0), ((1, 1), -1)])
def test_softmax(kernels, dtype, shape, axis, rng):
    assert_twins(lambda x: F.softmax(x, axis), lambda x: C.softmax(x, axis),
                 leaves(rng, dtype, shape), dtype)


@pytest.mark.parametrize("shape,axis", [((7, 13), -1), ((3, 5, 11), -1), ((6, 9), 0), ((1, 1), -1)])
def test_log_softmax(kernels, dtype, shape, axis, rng):
    assert_twins(lambda x: F.log_softmax(x, axis), lambda x: C.log_softmax(x, axis),
                 leaves(rng, dtype, shape), dtype)


@pytest.mark.parametrize("shape", [(9, 37), (3, 5, 23), (1, 2)])
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
def test_cross_entropy(kernels, dtype, shape, ignored, rng):
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    if ignored == "some":
        targets.reshape(-1)[::3] = -100
    elif ignored == "all":
        targets[...] = -100
    (logits,) = leaves(rng, dtype, shape)
    logits.data *= 3.0  # a peaked softmax, so that some probabilities are tiny
    assert_twins(lambda z: F.cross_entropy(z, targets), lambda z: C.cross_entropy(z, targets),
                 [logits], dtype)


def test_cross_entropy_other_ignore_index(kernels, dtype, rng):
    targets = np.array([4, 0, 7, 0, 2])
    assert_twins(lambda z: F.cross_entropy(z, targets, ignore_index=0),
                 lambda z: C.cross_entropy(z, targets, ignore_index=0),
                 leaves(rng, dtype, (5, 11)), dtype)


@pytest.mark.parametrize("shape", [(7, 19), (2, 5, 33), (1, 3)])
@pytest.mark.parametrize("params", ["weight_bias", "weight", "none"])
def test_layer_norm(kernels, dtype, shape, params, rng):
    (x,) = leaves(rng, dtype, shape)
    x.data += 2.0  # a mean away from 0, so that centring matters
    C_ = shape[-1]
    ps = {"weight_bias": [(C_,), (C_,)], "weight": [(C_,)], "none": []}[params]
    inputs = [x] + leaves(rng, dtype, *ps)
    assert_twins(lambda *a: F.layer_norm(*a, eps=1e-5), lambda *a: C.layer_norm(*a, eps=1e-5),
                 inputs, dtype)


@pytest.mark.parametrize("shape", [(7, 13), (3, 5, 11)])
def test_gelu(kernels, dtype, shape, rng):
    (x,) = leaves(rng, dtype, shape)
    x.data *= 3.0  # reach the tails, where the tanh saturates
    assert_twins(F.gelu, C.gelu, [x], dtype)


@pytest.mark.parametrize("shape", [(7, 13), (3, 5, 11)])
def test_bias_gelu(kernels, dtype, shape, rng):
    assert_twins(F.bias_gelu, C.bias_gelu, leaves(rng, dtype, shape, shape[-1:]), dtype)


@pytest.mark.parametrize("shapes", [((7, 13), (5, 13), (5,)), ((2, 3, 9), (11, 9), (11,)),
                                    ((3, 7), (4, 7), None)])
def test_linear(kernels, dtype, shapes, rng):
    inputs = leaves(rng, dtype, *[s for s in shapes if s is not None])
    assert_twins(F.linear, C.linear, inputs, dtype)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("B,H,Tq,Tk,D", [(2, 3, 7, 7, 5), (1, 2, 3, 11, 9), (2, 1, 1, 6, 3)])
def test_attention(kernels, dtype, causal, B, H, Tq, Tk, D, rng):
    # Tq < Tk is a step with a KV cache: the queries are the last Tq positions
    inputs = leaves(rng, dtype, (B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, D))
    assert_twins(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
                 lambda q, k, v: C.attention(q, k, v, causal=causal), inputs, dtype)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_with_a_padding_mask(kernels, dtype, causal, rng):
    # left padding: batch row 0 has its first 2 keys hidden, row 1 none; mask (B, 1, 1, Tk)
    B, H, T, D = 2, 3, 6, 5
    keep = np.ones((B, T), dtype=bool)
    keep[0, :2] = False
    mask = keep[:, None, None, :]
    inputs = leaves(rng, dtype, (B, H, T, D), (B, H, T, D), (B, H, T, D))
    rows = slice(2, None) if causal else slice(None)  # causal: queries 0, 1 of row 0 see no key

    def fused(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, causal=causal, mask=mask)[:, :, rows]

    def twin(q, k, v):
        return C.attention(q, k, v, causal=causal, mask=mask)[:, :, rows]

    assert_twins(fused, twin, inputs, dtype)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("B,T,H,D", [(2, 7, 3, 5), (1, 1, 2, 3)])
def test_self_attention(kernels, dtype, causal, B, T, H, D, rng):
    assert_twins(lambda qkv: F.self_attention(qkv, H, causal=causal),
                 lambda qkv: C.self_attention(qkv, H, causal=causal),
                 leaves(rng, dtype, (B, T, 3 * H * D)), dtype)


def test_causal_mask_sees_itself_and_the_past():
    m = C.causal_mask(2, 4)  # the last 2 of 4 positions
    np.testing.assert_array_equal(m, [[True, True, True, False], [True, True, True, True]])
    np.testing.assert_array_equal(C.causal_mask(3, 3), np.tril(np.ones((3, 3), dtype=bool)))


def test_the_twin_catches_a_wrong_fused_gradient(rng):
    # the comparison fails when the gradients differ even though the values agree
    x = leaves(rng, np.float64, (4, 6))
    with pytest.raises(AssertionError, match="gradient of input 0"):
        assert_twins(lambda x: C.softmax(x) + (x - x.detach()) * 1e-3, C.softmax, x,
                     np.float64)


TWINS = {
    "softmax": (lambda x: C.softmax(x, 0), [(4, 5)]),
    "log_softmax": (C.log_softmax, [(4, 5)]),
    "cross_entropy": (lambda z: C.cross_entropy(z, np.array([[1, -100, 4], [0, 2, 2]])),
                      [(2, 3, 5)]),
    "layer_norm": (C.layer_norm, [(3, 6), (6,), (6,)]),
    "gelu": (C.gelu, [(3, 5)]),
    "bias_gelu": (C.bias_gelu, [(3, 5), (5,)]),
    "linear": (C.linear, [(3, 4), (5, 4), (5,)]),
    "attention": (lambda q, k, v: C.attention(q, k, v, causal=True), [(1, 2, 3, 4), (1, 2, 5, 4),
                                                                       (1, 2, 5, 4)]),
    "self_attention": (lambda qkv: C.self_attention(qkv, 2, causal=False), [(2, 3, 12)]),
}


@pytest.mark.parametrize("name", list(TWINS))
def test_twin_gradcheck(name, rng):
    # the twins' own float64 finite-difference check (their gradients come from the primitives)
    fn, shapes = TWINS[name]
    assert gradcheck(fn, *leaves(rng, np.float64, *shapes)) <= 1e-6 + 1e-12
