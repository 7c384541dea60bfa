"""kernels/cpu/rmsnorm.py, rope.py and swiglu.py beyond tests/kernels/test_ladders.py (which runs
every rung against the reference on tests/kernels/_inputs.py's cases): the ladders the registry
reads, the rotary angles and layouts, errors, saturated gates, and the reference backwards
against float64 central differences of the reference forwards."""

import zlib

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels import registry

pytest.importorskip("numba")

OPS = {"rms_norm_forward": "rmsnorm", "rms_norm_backward": "rmsnorm", "rope_forward": "rope",
       "rope_backward": "rope", "swiglu_forward": "swiglu", "swiglu_backward": "swiglu"}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def rungs(op):
    return [registry.ladder(op).rung(v) for v in registry.ladder(op).versions]


@pytest.fixture
def numba_mode():
    prev = registry.get_mode()
    registry.set_mode("numba")
    yield
    registry.set_mode(prev)


def test_every_op_has_a_ladder_in_its_module():
    for op, module in OPS.items():
        lad = registry.ladder(op, "cpu")
        assert lad is not None and lad.device == "cpu" and lad.default in lad.versions, op
        assert registry.describe(("cpu",))[registry.ops().index(op)][3] == f"kernels.cpu.{module}"


def test_float16_runs_the_reference(numba_mode):
    x = rng_for("f16").standard_normal((7, 33)).astype(np.float16)
    w = np.ones(33, np.float16)
    assert registry.rung_for("rms_norm_forward", x, w, 1e-5) == (None, "v2: float16 input")
    y, _ = registry.get("rms_norm_forward", x)(x, w, 1e-5)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, R.rms_norm_forward(x, w, 1e-5)[0])


# --------------------------------------------------------------------------- RMSNorm
def rms_inputs(shape, dtype):
    rng = rng_for("rms", shape)
    N, C = shape
    x = (rng.standard_normal((N, C)) * 2 + 1).astype(dtype)
    w = (1 + 0.3 * rng.standard_normal(C)).astype(dtype)
    dy = rng.standard_normal((N, C)).astype(dtype)
    return x, w, dy


def test_rms_norm_rejects_a_mismatched_weight():
    x, w, _ = rms_inputs((3, 5), np.float32)
    for rung in rungs("rms_norm_forward"):
        with pytest.raises(ValueError, match="weight of shape"):
            rung.run(x, w[:4], 1e-5)


# --------------------------------------------------------------------------- rotary embeddings
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


def test_rope_cos_sin_values():
    cos, sin = R.rope_cos_sin(np.array([0, 3]), 4, base=100.0, dtype=np.float64)
    theta = np.array([[0.0, 0.0], [3.0, 3.0 / 10.0]])  # p * 100^(-2i/4), i = 0, 1
    np.testing.assert_allclose(cos, np.cos(theta), rtol=1e-15)
    np.testing.assert_allclose(sin, np.sin(theta), rtol=1e-15)


def test_rope_cos_sin_is_a_helper_not_a_kernel():
    assert "rope_cos_sin" not in registry.ops() and "causal_mask" not in registry.ops()
    assert {"rope_forward", "rope_backward"} <= set(registry.ops())


def test_rope_layouts_rotate_the_same_pairs():
    """Interleaved on x equals half-split on x with each head's entries regrouped as
    (evens | odds), regrouped back: the layouts differ only in which entries form a pair."""
    x, _, cos, sin = rope_inputs((2, 3, 5, 6), np.float64, False, 4)
    perm = np.r_[0:6:2, 1:6:2]  # (x0, x2, x4, x1, x3, x5)
    y_pairs = R.rope_forward(x, cos, sin, True)
    y_halves = R.rope_forward(x[..., perm], cos, sin, False)
    np.testing.assert_allclose(y_halves, y_pairs[..., perm], rtol=1e-14)


def test_rope_rejects_mismatched_angles(numba_mode):
    x = np.zeros((1, 2, 5, 6), np.float32)
    cos, sin = R.rope_cos_sin(np.arange(4), 6)
    for rung in rungs("rope_forward"):
        with pytest.raises(ValueError, match="cos/sin"):
            rung.run(x, cos, sin)
    with pytest.raises(ValueError, match="cos/sin"):
        registry.get("rope_forward", x)(x, cos, sin)


# --------------------------------------------------------------------------- SwiGLU
def swiglu_inputs(shape, dtype):
    rng = rng_for("swiglu", shape)
    gate = (rng.standard_normal(shape) * 4).astype(dtype)
    gate.reshape(-1)[:3] = [-120.0, 95.0, 0.0][: gate.size]  # past exp's range both ways
    up = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return gate, up, dy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swiglu_saturated_gates_stay_finite(dtype):
    gate, up, dy = swiglu_inputs((2, 4097), dtype)
    for rung in rungs("swiglu_forward"):
        assert np.isfinite(rung.run(gate, up)).all()
    for rung in rungs("swiglu_backward"):
        for out in rung.run(dy, gate, up):
            assert np.isfinite(out).all()


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
    """The CUDA ladders (importable without CuPy) cover the same kernels, and each rung says
    why it cannot take NumPy arrays instead of failing inside a launch."""
    x = np.zeros((3, 4), np.float32)
    args = {"rms_norm_forward": (x, x[0], 1e-5), "rms_norm_backward": (x, x, x[0], x[:, 0]),
            "rope_forward": (x[None, None], x[:, :2], x[:, :2], False),
            "rope_backward": (x[None, None], x[:, :2], x[:, :2], False),
            "swiglu_forward": (x, x), "swiglu_backward": (x, x, x)}
    for op, module in OPS.items():
        lad = registry.ladder(op, "cuda")
        assert lad.device == "cuda" and lad.default in lad.versions
        assert registry.describe(("cuda",))[registry.ops().index(op)][3] == \
            f"kernels.cuda.{module}"
        for v in lad.versions:
            assert lad.rung(v).reason_not(*args[op]) == "not a CuPy array"
