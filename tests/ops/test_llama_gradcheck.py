"""minillm/ops/llama.py: float64 finite-difference gradient checks of RMSNorm, RoPE and SwiGLU
(through the reference kernels and through the Numba ones), and each fused op against its
composite twin built from primitive ops, in values and gradients."""

import numpy as np
import pytest

import minillm as M
import minillm.functional as F
from minillm.errors import MinillmError
from minillm.kernels.reference import rope_cos_sin
from minillm.testing import gradcheck

RNG = np.random.default_rng(4321)


@pytest.fixture(params=["reference", "numba"], autouse=True)
def kernels(request):
    prev = M.get_kernels()
    M.set_kernels(request.param)
    yield request.param
    M.set_kernels(prev)


def leaf(*shape, transposed=False, scale=1.0):
    a = RNG.standard_normal(shape[::-1] if transposed else shape) * scale
    return M.Tensor(a.T if transposed else a, requires_grad=True)


def check(fn, *inputs):
    err = gradcheck(fn, *inputs)
    assert err <= 1e-6 + 1e-12, err


# --------------------------------------------------------------------------- composite twins
def rms_norm_composite(x, w, eps=1e-5):
    return x / ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt() * w


def rope_composite(x, cos, sin, interleaved):
    c = M.Tensor(cos[:, None] if cos.ndim == 3 else cos)
    s = M.Tensor(sin[:, None] if sin.ndim == 3 else sin)
    D = x.shape[-1]
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return F.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).reshape(*x.shape)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return F.cat([x1 * c - x2 * s, x1 * s + x2 * c], -1)


def swiglu_composite(gate, up):
    return F.silu(gate) * up


def assert_twins(fused, composite, *inputs):
    """Same values and the same gradients for a fixed random projection of the output."""
    y1 = fused(*inputs)
    r = RNG.standard_normal(y1.shape)
    grads = []
    for fn in (fused, composite):
        for t in inputs:
            t.grad = None
        y = fn(*inputs)
        (y * M.Tensor(r)).sum().backward()
        grads.append([t.grad.copy() for t in inputs])
        np.testing.assert_allclose(y.data, y1.data, rtol=1e-12, atol=1e-12)
    for g1, g2 in zip(*grads):
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("shape", [(7, 33), (2, 3, 5), (1, 1)], ids=str)
def test_rms_norm_gradcheck(shape):
    x, w = leaf(*shape), leaf(shape[-1])
    check(lambda a, b: F.rms_norm(a, b, 1e-5), x, w)


def test_rms_norm_transposed_input():
    x, w = leaf(6, 5, transposed=True), leaf(5)
    check(lambda a, b: F.rms_norm(a, b), x, w)


def test_rms_norm_matches_composite():
    assert_twins(F.rms_norm, rms_norm_composite, leaf(2, 4, 9), leaf(9))


def test_rms_norm_rejects_wrong_weight():
    with pytest.raises(MinillmError, match="rms_norm weight"):
        F.rms_norm(leaf(3, 4), leaf(5))


# --------------------------------------------------------------------------- RoPE
ROPE_CASES = [((2, 3, 5, 6), False), ((1, 2, 4, 8), True), ((2, 1, 3, 4), "rows")]


def angles(shape, per_row, offset=7):
    B, H, T, D = shape
    pos = offset + np.arange(T)
    if per_row == "rows":
        pos = pos[None, :] + 2 * np.arange(B)[:, None]
    return rope_cos_sin(pos, D, 10000.0, dtype=np.float64)


@pytest.mark.parametrize("interleaved", [False, True], ids=["halves", "pairs"])
@pytest.mark.parametrize("shape,per_row", ROPE_CASES, ids=str)
def test_rope_gradcheck(shape, per_row, interleaved):
    cos, sin = angles(shape, per_row)
    check(lambda a: F.rope(a, cos, sin, interleaved), leaf(*shape))


@pytest.mark.parametrize("interleaved", [False, True], ids=["halves", "pairs"])
@pytest.mark.parametrize("shape,per_row", ROPE_CASES, ids=str)
def test_rope_matches_composite(shape, per_row, interleaved):
    cos, sin = angles(shape, per_row)
    assert_twins(lambda a: F.rope(a, cos, sin, interleaved),
                 lambda a: rope_composite(a, cos, sin, interleaved), leaf(*shape))


def test_rope_of_a_permuted_view():
    x = leaf(2, 5, 3, 6)  # (B, T, H, D) as projections come out; rope sees (B, H, T, D)
    cos, sin = angles((2, 3, 5, 6), False)
    check(lambda a: F.rope(a.permute(0, 2, 1, 3), cos, sin, True), x)


def test_rope_rejects_wrong_angles():
    cos, sin = angles((1, 1, 4, 6), False)
    with pytest.raises(MinillmError, match="rope angles"):
        F.rope(leaf(1, 2, 5, 6), cos, sin)


# --------------------------------------------------------------------------- SwiGLU
@pytest.mark.parametrize("shape", [(7, 33), (2, 3, 5), (1,)], ids=str)
def test_swiglu_gradcheck(shape):
    check(F.swiglu, leaf(*shape, scale=2.0), leaf(*shape))


def test_swiglu_matches_composite():
    assert_twins(F.swiglu, swiglu_composite, leaf(3, 4, 5, scale=3.0), leaf(3, 4, 5))


def test_swiglu_rejects_mismatched_shapes():
    with pytest.raises(MinillmError, match="swiglu"):
        F.swiglu(leaf(3, 4), leaf(4, 3))
