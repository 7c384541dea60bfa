"""Every version of every CUDA kernel (kernels/cuda) against kernels/reference.py, on a GPU.

Inputs are random, at sizes that are not multiples of any tile or vector width (plus a few
that are, to take the float4 paths). The reference runs in float64 on the host from the same
(rounded) inputs. Every output buffer the launchers allocate is poisoned first (cupy.empty and
cupy.empty_like return NaN-filled arrays for the length of a test), so an element a kernel
forgets to write fails the comparison instead of passing by luck.

Tolerances by arithmetic:
  FP32 kernels                  |got - want| <= 1e-5 |want| + 1e-5 max|want| (elementwise), or
                                ||got - want|| / ||want|| <= 1e-5 for long reductions
  TF32 matmul (10-bit mantissa) norm ratio <= 1e-3: each product carries ~2 * 2^-11 rounding
                                error, so ~4e-4 is expected on random data; 1e-3 leaves room
  FP16 / BF16 attention         norm ratio <= 5e-3 / 2e-2 (fp32 accumulation; P and dS are
                                rounded to 16 bits before their products, as in FlashAttention)

Marker ``gpu``: skipped without CuPy or a CUDA device (and deselected by default; run with
``pytest -m gpu tests/kernels/test_cuda_kernels.py`` on a GPU machine).
"""

import importlib
import math

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels import registry

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")
from _cuda import gpu, poison, rng_for  # noqa: E402, F401  (fixtures)

_mod = lambda name: importlib.import_module(f"minillm.kernels.cuda.{name}")  # noqa: E731
KM, KLN, KSM, KCE, KGL, KAW, KAT = map(
    _mod, ("matmul", "layernorm", "softmax", "crossentropy", "gelu", "adamw", "attention")
)


def versions(module, op):
    """The versions of ``op`` declared in ``module.LADDERS``."""
    return {lad.op: lad for lad in module.LADDERS}[op].versions


def host64(a):
    return cp.asnumpy(a).astype(np.float64)


def dev(x, dtype="float32"):
    if dtype == "bfloat16":
        ml = pytest.importorskip("ml_dtypes")
        try:
            return cp.asarray(np.asarray(x).astype(ml.bfloat16))
        except Exception as e:
            pytest.skip(f"this CuPy has no bfloat16 arrays: {e}")
    return cp.asarray(np.asarray(x, dtype=dtype))


def assert_close(got, want, rtol=1e-5, atol_frac=1e-5):
    got = host64(got) if not isinstance(got, np.ndarray) else got.astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.isfinite(got).all() or not np.isfinite(want).all(), "NaN/inf (unwritten output?)"
    atol = atol_frac * max(1.0, float(np.abs(want).max())) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def assert_norm(got, want, tol):
    got = host64(got) if not isinstance(got, np.ndarray) else got.astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.isfinite(got).all(), "NaN/inf in the output (an unwritten element?)"
    denom = max(np.linalg.norm(want), 1e-30)
    ratio = np.linalg.norm(got - want) / denom
    assert ratio <= tol, f"||got - want|| / ||want|| = {ratio:.3g} > {tol}"


# =========================================================================== matmul
MM_SHAPES = [(1, 1, 1), (7, 13, 5), (67, 129, 33), (200, 260, 132), (513, 257, 131), (128, 256, 64)]


@pytest.mark.parametrize("shape", MM_SHAPES, ids=str)
@pytest.mark.parametrize("version", [v for v in versions(KM, "matmul") if v != 7])  # 7: cuBLAS
def test_matmul_versions(version, shape):
    M, N, K = shape
    rng = rng_for("mm", version, shape)
    a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    want = a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64)
    got = getattr(KM, f"matmul_v{version}")(dev(a), dev(b))
    assert_norm(got, want, 1e-3 if version in KM.TF32_VERSIONS else 1e-5)


@pytest.mark.parametrize("shape", [(37, 129, 65), (64, 3072, 768)], ids=str)
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("version", KM.EPILOGUE_VERSIONS)
def test_matmul_fused_epilogues(version, gelu, shape):
    M, N, K = shape
    rng = rng_for("mmepi", version, gelu, shape)
    a, b, bias = rng.standard_normal((M, K)), rng.standard_normal((K, N)), rng.standard_normal(N)
    a32, b32, bias32 = (x.astype(np.float32).astype(np.float64) for x in (a, b, bias))
    want = R.bias_gelu_forward(a32 @ b32, bias32) if gelu else a32 @ b32 + bias32
    fn = KM.matmul_bias_gelu if gelu else KM.matmul_bias
    got = fn(dev(a), dev(b), dev(bias), version=version)
    assert_norm(got, want, 1e-3 if version in KM.TF32_VERSIONS else 1e-5)


def test_matmul_default_is_cublas_for_any_shape_and_dtype():
    rng = rng_for("mmdef")
    a, b = rng.standard_normal((2, 3, 5, 7)), rng.standard_normal((7, 4))
    assert_close(KM.cublas(dev(a, "float64"), dev(b, "float64")), a @ b, rtol=1e-12)
    assert registry.get("matmul", dev(a)) is KM.cublas  # the default rung, no fits


# =========================================================================== layernorm
LN_SHAPES = [(1, 1), (37, 33), (301, 100), (64, 771), (5, 1030)]


@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("version", versions(KLN, "layernorm_forward"))
def test_layernorm_forward_versions(version, shape):
    N, C = shape
    if version == 3 and C > KLN.MAX_C_REGISTERS:
        pytest.skip(f"v{version} holds rows of at most {KLN.MAX_C_REGISTERS} floats")
    rng = rng_for("lnf", version, shape)
    x = (3 + 2 * rng.standard_normal((N, C))).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    y, mean, rstd = KLN.forward(version, dev(x), dev(w), dev(b), 1e-5)
    wy, wm, wr = R.layernorm_forward(
        x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1e-5
    )
    assert_close(y, wy, rtol=1e-4, atol_frac=1e-5)
    assert_close(mean, wm)
    assert_close(rstd, wr, rtol=1e-4)


@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("version", versions(KLN, "layernorm_backward"))
def test_layernorm_backward_versions(version, shape):
    N, C = shape
    if version == 2 and C > KLN.MAX_C_REGISTERS:
        pytest.skip(f"v{version} holds rows of at most {KLN.MAX_C_REGISTERS} floats")
    rng = rng_for("lnb", version, shape)
    x = rng.standard_normal((N, C)).astype(np.float32)
    w = rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal((N, C)).astype(np.float32)
    x64 = x.astype(np.float64)
    _, mean, rstd = R.layernorm_forward(x64, w.astype(np.float64), None, 1e-5)
    wdx, wdw, wdb = R.layernorm_backward(
        dy.astype(np.float64), x64, w.astype(np.float64), mean, rstd
    )
    dx, dw, db = KLN.backward(version, dev(dy), dev(x), dev(w), dev(mean), dev(rstd))
    assert_norm(dx, wdx, 1e-5)
    assert_norm(dw, wdw, 1e-5)
    assert_norm(db, wdb, 1e-5)


def test_layernorm_none_weights_and_determinism():
    rng = rng_for("ln-none")
    x = rng.standard_normal((300, 768)).astype(np.float32)
    y, mean, rstd = registry.get("layernorm_forward", dev(x))(dev(x), None, None, 1e-5)
    assert_close(y, R.layernorm_forward(x.astype(np.float64), None, None, 1e-5)[0], rtol=1e-4)
    dy = dev(rng.standard_normal((300, 768)))
    w = dev(rng.standard_normal(768))
    backward = registry.get("layernorm_backward", dy)
    r1 = backward(dy, dev(x), w, mean, rstd)
    r2 = backward(dy, dev(x), w, mean, rstd)
    for a, b in zip(r1, r2):  # fixed-order reductions: the same bits every run
        assert cp.array_equal(a, b)
    assert backward(dy, dev(x), None, mean, rstd)[1] is None
    long_rows = dev(rng.standard_normal((3, KLN.MAX_C_REGISTERS + 5)))  # v3 declines: v2 runs
    assert registry.rung_for("layernorm_forward", long_rows, None, None)[0] == 2


# =========================================================================== softmax
SM_SHAPES = [(1, 1), (37, 65), (9, 4099), (3, 5, 7), (2, 50304)]


@pytest.mark.parametrize("shape", SM_SHAPES, ids=str)
@pytest.mark.parametrize("op,version", [(op, v) for op in KSM.OPS for v in versions(KSM, op)])
def test_softmax_versions(op, version, shape):
    rng = rng_for("sm", op, version, shape)
    x = (4 * rng.standard_normal(shape)).astype(np.float32)
    x64 = x.astype(np.float64)
    if op.endswith("forward"):
        assert_close(KSM.run(op, version, dev(x)), getattr(R, op)(x64), rtol=1e-5)
    else:
        y = getattr(R, op.replace("backward", "forward"))(x64)
        dy = rng.standard_normal(shape)
        want = getattr(R, op)(dy, y)
        got = KSM.run(op, version, dev(dy), dev(y))
        assert_norm(got, want, 1e-5)


def test_softmax_masked_entries_are_exact_zeros():
    x = np.zeros((2, 9), np.float32)
    x[0, :4] = -np.inf
    for v in versions(KSM, "softmax_forward"):
        y = cp.asnumpy(KSM.run("softmax_forward", v, dev(x)))
        assert (y[0, :4] == 0).all() and np.allclose(y.sum(-1), 1, atol=1e-6)


# =========================================================================== cross-entropy
CE_CASES = [(1, 5, 0.0), (37, 1001, 0.3), (8, 50304, 0.25), (5, 7, 1.0)]  # (N, V, ignored frac)


def _ce_inputs(N, V, frac, rng, ignore=-100):
    logits = (3 * rng.standard_normal((N, V))).astype(np.float32)
    t = rng.integers(0, V, N)
    t[rng.random(N) < frac] = ignore
    return logits, t.astype(np.int64)


@pytest.mark.parametrize("case", CE_CASES, ids=str)
@pytest.mark.parametrize("version", versions(KCE, "cross_entropy_forward"))
def test_cross_entropy_forward_versions(version, case):
    logits, t = _ce_inputs(*case, rng_for("cef", version, case))
    loss, lse = KCE.forward(version, dev(logits), cp.asarray(t), -100)
    wl, wlse = R.cross_entropy_forward(logits.astype(np.float64), t, -100)
    assert loss.shape == () and lse.shape == (case[0],)
    assert_close(loss, np.asarray(wl), rtol=1e-5)
    assert_close(lse, wlse, rtol=1e-6)


@pytest.mark.parametrize("case", CE_CASES, ids=str)
@pytest.mark.parametrize("version", versions(KCE, "cross_entropy_backward"))
def test_cross_entropy_backward_versions(version, case):
    logits, t = _ce_inputs(*case, rng_for("ceb", version, case))
    l64 = logits.astype(np.float64)
    _, lse = R.cross_entropy_forward(l64, t, -100)
    want = R.cross_entropy_backward(0.7, l64, lse, t, -100)
    got = KCE.backward(
        version, cp.asarray(np.float32(0.7)), dev(logits), dev(lse), cp.asarray(t), -100
    )
    assert_close(got, want, rtol=1e-5, atol_frac=1e-6)


def test_cross_entropy_other_ignore_index_and_int32_targets():
    logits, t = _ce_inputs(17, 33, 0.4, rng_for("ce-ii"), ignore=5)
    loss, lse = registry.get("cross_entropy_forward", dev(logits))(
        dev(logits), cp.asarray(t.astype(np.int32)), 5)
    wl, _ = R.cross_entropy_forward(logits.astype(np.float64), t, 5)
    assert_close(loss, np.asarray(wl))


# =========================================================================== GELU
GL_SHAPES = [(1,), (1001,), (37, 771), (64, 128), (8, 3072)]


@pytest.mark.parametrize("shape", GL_SHAPES, ids=str)
@pytest.mark.parametrize("op,version", [(op, v) for op in KGL.OPS for v in versions(KGL, op)])
def test_gelu_versions(op, version, shape):
    if op.startswith("bias") and len(shape) != 2:
        pytest.skip("bias + GELU takes (N, C)")
    rng = rng_for("gl", op, version, shape)
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    x64 = x.astype(np.float64)
    dy = rng.standard_normal(shape).astype(np.float32)
    if op.startswith("bias"):
        b = rng.standard_normal(shape[1]).astype(np.float32)
        if op.endswith("forward"):
            assert_close(
                KGL.run(op, version, dev(x), dev(b)), R.bias_gelu_forward(x64, b.astype(np.float64))
            )
        else:
            dx, db = KGL.run(op, version, dev(dy), dev(x), dev(b))
            wdx, wdb = R.bias_gelu_backward(dy.astype(np.float64), x64, b.astype(np.float64))
            assert_close(dx, wdx)
            assert_norm(db, wdb, 1e-5)
    elif op.endswith("forward"):
        assert_close(KGL.run(op, version, dev(x)), R.gelu_forward(x64))
    else:
        assert_close(
            KGL.run(op, version, dev(dy), dev(x)), R.gelu_backward(dy.astype(np.float64), x64)
        )


# =========================================================================== AdamW
@pytest.mark.parametrize("n", [1, 1001, 4099, 65536])
@pytest.mark.parametrize("step,wd", [(1, 0.0), (10, 0.1)])
@pytest.mark.parametrize("version", versions(KAW, "adamw_step"))
def test_adamw_versions(version, n, step, wd):
    rng = rng_for("aw", version, n, step, wd)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m = (0.1 * rng.standard_normal(n)).astype(np.float32)
    v = (0.01 * rng.random(n)).astype(np.float32)
    want = [a.astype(np.float64) for a in (p, m, v)]
    R.adamw_step(want[0], g.astype(np.float64), want[1], want[2], 1e-3, 0.9, 0.95, 1e-8, wd, step)
    dp, dm, dv = dev(p), dev(m), dev(v)
    KAW.run(version, dp, dev(g), dm, dv, 1e-3, 0.9, 0.95, 1e-8, wd, step)
    for got, w in zip((dp, dm, dv), want):
        assert_close(got, w, rtol=1e-5, atol_frac=1e-6)


def test_adamw_noncontiguous_goes_to_reference_in_place():
    p = dev(np.ones((4, 6)))[:, ::2]
    g, m, v = cp.ones_like(p), cp.zeros_like(p), cp.zeros_like(p)
    assert registry.rung_for("adamw_step", p, g, m, v)[0] is None
    registry.get("adamw_step", p)(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    assert_close(p, np.full((4, 3), 0.9), rtol=1e-5)


# =========================================================================== attention
# (B, H, Tq, Tk, D, causal)
ATT_CASES = [
    (1, 1, 1, 1, 64, True),
    (2, 3, 37, 37, 64, True),
    (1, 2, 100, 100, 128, True),
    (2, 1, 17, 70, 64, True),
    (1, 2, 33, 45, 64, False),
    (1, 1, 130, 130, 128, False),
    (1, 1, 1, 77, 128, True),
]
ATT_TOL = {"float32": (1e-5, 1e-5), "float16": (5e-3, 1e-2), "bfloat16": (2e-2, 3e-2)}  # fwd, bwd


def _att_inputs(case, dtype, rng):
    B, H, Tq, Tk, D, _ = case
    q, k, v = (rng.standard_normal(s) for s in ((B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, D)))
    do = rng.standard_normal((B, H, Tq, D))
    arrs = [dev(a, dtype) for a in (q, k, v, do)]
    return arrs, [host64(a) for a in arrs]  # the reference sees the rounded inputs


def _att_dtypes(version):
    return ["float32"] if version == 1 else ["float16", "bfloat16"]


@pytest.mark.parametrize("case", ATT_CASES, ids=str)
@pytest.mark.parametrize("version,dtype", [(v, d) for v in (1, 2) for d in _att_dtypes(v)])
def test_attention_versions(version, dtype, case):
    causal = case[-1]
    (q, k, v, do), (q64, k64, v64, do64) = _att_inputs(
        case, dtype, rng_for("att", version, dtype, case)
    )
    scale = 1.0 / math.sqrt(case[4])
    o, lse = KAT.forward(version, q, k, v, scale, causal)
    wo, wlse = R.attention_forward(q64, k64, v64, scale, causal)
    tf, tb = ATT_TOL[dtype]
    assert o.dtype == q.dtype and lse.dtype == cp.float32
    assert_norm(o, wo, tf)
    assert_close(lse, wlse, rtol=tf, atol_frac=tf)
    dq, dk, dv = KAT.backward(version, do, q, k, v, o, lse, scale, causal)
    wdq, wdk, wdv = R.attention_backward(do64, q64, k64, v64, wo, wlse, scale, causal)
    for got, want in ((dq, wdq), (dk, wdk), (dv, wdv)):
        assert got.dtype == q.dtype
        assert_norm(got, want, tb)


def test_attention_falls_back_for_other_head_dims_and_float64():
    rng = rng_for("att-fb")
    for D, dtype in ((48, "float32"), (64, "float64")):
        q, k, v = (dev(rng.standard_normal((1, 2, 9, D)), dtype) for _ in range(3))
        assert registry.rung_for("attention_forward", q, k, v, 0.125, True)[0] is None
        o, lse = registry.get("attention_forward", q)(q, k, v, 0.125, True)
        assert_close(o, R.attention_forward(host64(q), host64(k), host64(v), 0.125, True)[0])


# =========================================================================== registry
def test_registry_routes_cupy_arrays_to_the_cuda_ladders():
    x = cp.zeros((2, 3), cp.float32)
    for op in registry.ops():
        fn, lad = registry.get(op, x), registry.ladder(op, "cuda")
        if lad is None:
            assert fn is getattr(R, op)
        else:
            assert getattr(fn, "__wrapped__", fn) is lad.rung(lad.default).run
    assert {r[0] for r in registry.describe(("cuda",))} == set(registry.ops())
