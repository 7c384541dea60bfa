"""Every rung of kernels/cuda/rmsnorm.py, rope.py and swiglu.py against kernels/reference.py on
a GPU: float32 inputs at odd sizes, the reference in float64 on the host from the same inputs.

Marker ``gpu``: skipped without CuPy or a CUDA device (run with
``pytest -m gpu tests/kernels/test_cuda_llama_ops.py`` on a GPU machine).
"""


import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels import registry

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")
from _cuda import gpu, poison, rng_for  # noqa: E402, F401  (fixtures)


def f32(a):
    return np.asarray(a, np.float32)


def close(got, want, rtol=1e-5):
    got = cp.asnumpy(got).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))


def ladder(op):
    lad = registry.ladder(op, "cuda")
    assert lad is not None and lad.device == "cuda"
    return lad


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (65, 576), (3, 1100)], ids=str)
def test_rms_norm(shape):
    rng = rng_for("rms", shape)
    x, w, dy = f32(rng.standard_normal(shape) + 1), f32(1 + 0.3 * rng.standard_normal(shape[1])), \
        f32(rng.standard_normal(shape))
    y_ref, r_ref = R.rms_norm_forward(x.astype(np.float64), w.astype(np.float64), 1e-5)
    dx_ref, dw_ref = R.rms_norm_backward(dy.astype(np.float64), x.astype(np.float64),
                                         w.astype(np.float64), r_ref)
    X, W, DY = cp.asarray(x), cp.asarray(w), cp.asarray(dy)
    for rung in ladder("rms_norm_forward").rungs:
        assert rung.reason_not(X, W, 1e-5) is None
        y, r = rung.run(X, W, 1e-5)
        close(y, y_ref)
        close(r, r_ref)
    for rung in ladder("rms_norm_backward").rungs:
        dx, dw = rung.run(DY, X, W, cp.asarray(r_ref.astype(np.float32)))
        close(dx, dx_ref, 1e-4)
        close(dw, dw_ref, 1e-4)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("shape,per_row", [((2, 3, 5, 6), False), ((2, 9, 37, 64), False),
                                           ((3, 2, 7, 34), True)], ids=str)
def test_rope(shape, per_row, interleaved):
    rng = rng_for("rope", shape, per_row)
    B, H, T, D = shape
    pos = 11 + np.arange(T) + (np.arange(B)[:, None] * 2 if per_row else 0)
    cos, sin = R.rope_cos_sin(pos, D, 10000.0, dtype=np.float32)
    x = f32(rng.standard_normal(shape))
    c64, s64, x64 = cos.astype(np.float64), sin.astype(np.float64), x.astype(np.float64)
    for op in ("rope_forward", "rope_backward"):
        want = getattr(R, op)(x64, c64, s64, interleaved)
        for rung in ladder(op).rungs:
            close(rung.run(cp.asarray(x), cp.asarray(cos), cp.asarray(sin), interleaved), want)


@pytest.mark.parametrize("shape", [(1,), (7, 33), (3, 5, 1537), (4099,)], ids=str)
def test_swiglu(shape):
    rng = rng_for("swiglu", shape)
    gate, up, dy = (f32(rng.standard_normal(shape) * 4) for _ in range(3))
    gate.reshape(-1)[:2] = [-100.0, 0.5][: gate.size]
    g64, u64, d64 = (a.astype(np.float64) for a in (gate, up, dy))
    G, U, DY = cp.asarray(gate), cp.asarray(up), cp.asarray(dy)
    for rung in ladder("swiglu_forward").rungs:
        close(rung.run(G, U), R.swiglu_forward(g64, u64))
    for rung in ladder("swiglu_backward").rungs:
        for got, want in zip(rung.run(DY, G, U), R.swiglu_backward(d64, g64, u64)):
            close(got, want)


def test_registry_runs_the_cuda_defaults():
    x = cp.zeros((2, 3, 4, 6), cp.float32)
    cos, sin = cp.ones((4, 3), cp.float32), cp.zeros((4, 3), cp.float32)
    args = {"rms_norm_forward": (x[0, 0], x[0, 0, 0], 1e-5),
            "rope_forward": (x, cos, sin, False), "swiglu_forward": (x, x)}
    for op, a in args.items():
        lad = ladder(op)
        assert registry.rung_for(op, *a) == (lad.default, "default")
        fn = registry.get(op, a[0])
        assert getattr(fn, "__wrapped__", fn) is lad.rung(lad.default).run
    # float64 CuPy arrays: every rung declines, the reference runs on the GPU
    x64 = cp.ones((3, 5), cp.float64)
    assert registry.rung_for("swiglu_forward", x64, x64) == (None, "v2: float64 input")
    close(registry.get("swiglu_forward", x64)(x64, x64), R.swiglu_forward(np.ones((3, 5)),
                                                                          np.ones((3, 5))))
