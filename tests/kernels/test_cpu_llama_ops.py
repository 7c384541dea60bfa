"""kernels/cpu/rmsnorm.py, rope.py and swiglu.py: every rung of every ladder against the NumPy
reference, forward and backward, float32 and float64, at odd sizes; the reference backwards
against float64 central differences of the reference forwards."""

import zlib

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import rmsnorm, rope, swiglu

DTYPES = [np.float32, np.float64]


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def rungs(module, op):
    (ladder,) = [lad for lad in module.LADDERS if lad.op == op]
    assert ladder.device == "cpu" and ladder.default in ladder.versions
    return [ladder.rung(v) for v in ladder.versions]


def ids(rung):
    return f"v{rung.version}"


def assert_close(got, want, scale=1.0):
    rtol = 2e-5 if want.dtype == np.float32 else 1e-12
    atol = rtol * max(1.0, float(np.abs(want).max() if want.size else 0.0)) * scale
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_every_op_has_both_ladders():
    ops = {lad.op for m in (rmsnorm, rope, swiglu) for lad in m.LADDERS}
    assert ops == {"rms_norm_forward", "rms_norm_backward", "rope_forward", "rope_backward",
                   "swiglu_forward", "swiglu_backward"}


def test_default_is_what_the_dispatcher_runs():
    from minillm.kernels import cpu

    x = rng_for("dispatch").standard_normal((7, 33)).astype(np.float32)
    w = np.ones(33, np.float32)
    assert cpu.rms_norm_forward is rmsnorm.rms_norm_forward
    for got, want in zip(cpu.rms_norm_forward(x, w, 1e-5), R.rms_norm_forward(x, w, 1e-5)):
        assert_close(got, want)


# --------------------------------------------------------------------------- RMSNorm
RMS_SHAPES = [(1, 1), (7, 33), (5, 64), (33, 257)]


def rms_inputs(shape, dtype):
    rng = rng_for("rms", shape)
    N, C = shape
    x = (rng.standard_normal((N, C)) * 2 + 1).astype(dtype)
    w = (1 + 0.3 * rng.standard_normal(C)).astype(dtype)
    dy = rng.standard_normal((N, C)).astype(dtype)
    return x, w, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RMS_SHAPES, ids=str)
@pytest.mark.parametrize("rung", rungs(rmsnorm, "rms_norm_forward"), ids=ids)
def test_rms_norm_forward(rung, shape, dtype):
    x, w, _ = rms_inputs(shape, dtype)
    for got, want in zip(rung.run(x, w, 1e-5), R.rms_norm_forward(x, w, 1e-5)):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RMS_SHAPES, ids=str)
@pytest.mark.parametrize("rung", rungs(rmsnorm, "rms_norm_backward"), ids=ids)
def test_rms_norm_backward(rung, shape, dtype):
    x, w, dy = rms_inputs(shape, dtype)
    _, rrms = R.rms_norm_forward(x, w, 1e-5)
    got = rung.run(dy, x, w, rrms)
    want = R.rms_norm_backward(dy, x, w, rrms)
    for g, r in zip(got, want):
        assert_close(g, r, scale=10.0)  # dw sums N rows, dx a difference of two terms


# --------------------------------------------------------------------------- rotary embeddings
ROPE_SHAPES = [(1, 1, 1, 2), (2, 3, 5, 6), (2, 3, 5, 64), (1, 2, 9, 34)]


def rope_inputs(shape, dtype, per_row, offset):
    rng = rng_for("rope", shape, per_row, offset)
    B, H, T, D = shape
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if per_row:  # each row its own positions (left padding), (B, T)
        pos = offset + np.arange(T)[None, :] + np.arange(B)[:, None] * 3
    else:
        pos = offset + np.arange(T)
    cos, sin = R.rope_cos_sin(pos, D, 10000.0, dtype=dtype)
    return x, dy, cos, sin


ROPE_CASES = [(False, 0), (False, 17), (True, 5)]  # (per-row positions, position offset)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True], ids=["halves", "pairs"])
@pytest.mark.parametrize("case", ROPE_CASES, ids=str)
@pytest.mark.parametrize("shape", ROPE_SHAPES, ids=str)
@pytest.mark.parametrize("op", ["rope_forward", "rope_backward"])
def test_rope(op, shape, case, interleaved, dtype):
    x, dy, cos, sin = rope_inputs(shape, dtype, *case)
    a = x if op == "rope_forward" else dy
    want = getattr(R, op)(a, cos, sin, interleaved)
    for rung in rungs(rope, op):
        assert_close(rung.run(a, cos, sin, interleaved), want)


def test_rope_cos_sin_values():
    cos, sin = R.rope_cos_sin(np.array([0, 3]), 4, base=100.0, dtype=np.float64)
    theta = np.array([[0.0, 0.0], [3.0, 3.0 / 10.0]])  # p * 100^(-2i/4), i = 0, 1
    np.testing.assert_allclose(cos, np.cos(theta), rtol=1e-15)
    np.testing.assert_allclose(sin, np.sin(theta), rtol=1e-15)


def test_rope_layouts_rotate_the_same_pairs():
    """Interleaved on x equals half-split on x with each head's entries regrouped as
    (evens | odds), regrouped back: the layouts differ only in which entries form a pair."""
    x, _, cos, sin = rope_inputs((2, 3, 5, 6), np.float64, False, 4)
    perm = np.r_[0:6:2, 1:6:2]  # (x0, x2, x4, x1, x3, x5)
    y_pairs = R.rope_forward(x, cos, sin, True)
    y_halves = R.rope_forward(x[..., perm], cos, sin, False)
    np.testing.assert_allclose(y_halves, y_pairs[..., perm], rtol=1e-14)


def test_rope_rejects_mismatched_angles():
    x = np.zeros((1, 2, 5, 6), np.float32)
    cos, sin = R.rope_cos_sin(np.arange(4), 6)
    with pytest.raises(ValueError, match="cos/sin"):
        rope.rope_forward(x, cos, sin)


# --------------------------------------------------------------------------- SwiGLU
SWIGLU_SHAPES = [(1,), (7, 33), (3, 5, 80), (4100,), (2, 4097)]


def swiglu_inputs(shape, dtype):
    rng = rng_for("swiglu", shape)
    gate = (rng.standard_normal(shape) * 4).astype(dtype)
    gate.reshape(-1)[:3] = [-120.0, 95.0, 0.0][: gate.size]  # past exp's range both ways
    up = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return gate, up, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SWIGLU_SHAPES, ids=str)
@pytest.mark.parametrize("rung", rungs(swiglu, "swiglu_forward"), ids=ids)
def test_swiglu_forward(rung, shape, dtype):
    gate, up, _ = swiglu_inputs(shape, dtype)
    assert_close(rung.run(gate, up), R.swiglu_forward(gate, up), scale=5.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SWIGLU_SHAPES, ids=str)
@pytest.mark.parametrize("rung", rungs(swiglu, "swiglu_backward"), ids=ids)
def test_swiglu_backward(rung, shape, dtype):
    gate, up, dy = swiglu_inputs(shape, dtype)
    for got, want in zip(rung.run(dy, gate, up), R.swiglu_backward(dy, gate, up)):
        assert np.isfinite(got).all()
        assert_close(got, want, scale=5.0)


# --------------------------------------------------------------------------- reference backwards
def numeric_grad(f, x, dy, eps=1e-6):
    """d sum(f(x) * dy) / dx by central differences (float64)."""
    g = np.empty_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = (f(x) * dy).sum()
        x[i] = old - eps
        down = (f(x) * dy).sum()
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def test_reference_backwards_match_finite_differences():
    x, w, dy = rms_inputs((3, 5), np.float64)
    _, rrms = R.rms_norm_forward(x, w)
    dx, dw = R.rms_norm_backward(dy, x, w, rrms)
    np.testing.assert_allclose(dx, numeric_grad(lambda a: R.rms_norm_forward(a, w)[0], x, dy),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numeric_grad(lambda a: R.rms_norm_forward(x, a)[0], w, dy),
                               rtol=1e-6, atol=1e-8)
    for interleaved in (False, True):
        xr, dyr, cos, sin = rope_inputs((1, 2, 3, 6), np.float64, False, 7)
        np.testing.assert_allclose(
            R.rope_backward(dyr, cos, sin, interleaved),
            numeric_grad(lambda a, c=cos, s=sin, i=interleaved: R.rope_forward(a, c, s, i),
                         xr, dyr),
            rtol=1e-6, atol=1e-8)
    gate, up, dy = swiglu_inputs((4, 5), np.float64)
    gate.reshape(-1)[:2] = [-3.0, 2.5]  # finite differences need a non-saturated gate
    dgate, dup = R.swiglu_backward(dy, gate, up)
    np.testing.assert_allclose(dgate, numeric_grad(lambda a: R.swiglu_forward(a, up), gate, dy),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dup, numeric_grad(lambda a: R.swiglu_forward(gate, a), up, dy),
                               rtol=1e-6, atol=1e-8)


def test_cuda_ladders_declare_the_same_ops_without_cupy():
    """The CUDA modules' ladders (importable without CuPy) cover the same kernels, and each
    rung says why it cannot take NumPy arrays instead of failing inside a launch."""
    import importlib

    x = np.zeros((3, 4), np.float32)
    ops = set()
    for name in ("rmsnorm", "rope", "swiglu"):
        for lad in importlib.import_module(f"minillm.kernels.cuda.{name}").LADDERS:
            assert lad.device == "cuda" and lad.default in lad.versions
            ops.add(lad.op)
            args = {"rms_norm_forward": (x, x[0], 1e-5), "rms_norm_backward": (x, x, x[0], x[:, 0]),
                    "rope_forward": (x[None, None], x[:, :2], x[:, :2], False),
                    "rope_backward": (x[None, None], x[:, :2], x[:, :2], False),
                    "swiglu_forward": (x, x), "swiglu_backward": (x, x, x)}[lad.op]
            for v in lad.versions:
                assert lad.rung(v).reason_not(*args) == "not a CuPy array"
    assert ops == {"rms_norm_forward", "rms_norm_backward", "rope_forward", "rope_backward",
                   "swiglu_forward", "swiglu_backward"}
