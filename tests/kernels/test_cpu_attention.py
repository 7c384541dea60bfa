"""kernels/cpu/attention/: v5's tile plans, strided views (as the model passes them), v7's
strides, the BLAS thread count, and a float64 finite-difference check of the reference attention
backward itself. (Every version on odd shapes, causal offsets included, against the reference:
tests/kernels/test_ladders.py.)"""

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels import registry
from minillm.kernels.cpu import attention as A
from minillm.kernels.cpu.attention import micro

DTYPES = [np.float32, np.float64]
BY_OP = {lad.op: lad for lad in A.LADDERS}
FWD, BWD = BY_OP["attention_forward"], BY_OP["attention_backward"]


def assert_close(got, want):
    """|got - want| <= atol + rtol |want|, atol scaled by the largest |want|."""
    rtol = 1e-4 if want.dtype == np.float32 else 1e-9
    atol = rtol * 0.1 * max(1.0, float(np.abs(want).max()))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def make(shape, dtype, seed=0):
    B, H, Tq, Tk, D, causal = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    k, v = (rng.standard_normal((B, H, Tk, D)).astype(dtype) for _ in range(2))
    do = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    return q, k, v, do, 1.0 / D**0.5, causal  # a Python float: np.float64 would promote (NEP 50)


def check_version(version, shape, dtype, seed=0):
    """Forward (o, lse) and backward (dq, dk, dv) of one version against the reference."""
    q, k, v, do, scale, causal = make(shape, dtype, seed)
    o, lse = R.attention_forward(q, k, v, scale, causal)
    o2, lse2 = FWD.rung(version).run(q, k, v, scale, causal)
    assert_close(o2, o)
    assert_close(lse2, lse)
    want = R.attention_backward(do, q, k, v, o, lse, scale, causal)
    for g, w in zip(BWD.rung(version).run(do, q, k, v, o, lse, scale, causal), want):
        assert_close(g, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_v5_tiles_smaller_than_the_problem(dtype, monkeypatch):
    # shrink the tile budget and the query block so that one call walks several batch chunks
    # (the last one short) and several query blocks with odd sizes
    from minillm.kernels.cpu.attention import blas_tiles

    monkeypatch.setattr(blas_tiles, "TILE", 2 * 3 * 8 * 40)
    monkeypatch.setattr(blas_tiles, "RB", 8)
    for shape in [(5, 3, 37, 37, 6, True), (5, 2, 20, 29, 5, True), (5, 3, 19, 19, 4, False)]:
        blocks, bc = blas_tiles._plan(*shape[:4], shape[5])
        assert bc < shape[0] and (len(blocks) > 1 or not shape[5])
        check_version(5, shape, dtype, seed=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", FWD.versions)
def test_rungs_take_non_contiguous_inputs(version, dtype):
    # q, k, v as the model makes them: (B, T, H, D) -> permuted views (B, H, T, D)
    rng = np.random.default_rng(1)
    B, T, H, D = 2, 19, 3, 8
    qkv = rng.standard_normal((B, T, 3, H, D)).astype(dtype)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    do = rng.standard_normal((B, T, H, D)).astype(dtype).transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous
    for causal in (True, False):
        o, lse = FWD.rung(version).run(q, k, v, 0.3, causal=causal)
        ro, rlse = R.attention_forward(q, k, v, 0.3, causal=causal)
        assert_close(o, ro)
        assert_close(lse, rlse)
        if version not in BWD.versions:  # v8 is forward only (decoding)
            continue
        got = BWD.rung(version).run(do, q, k, v, o, lse, 0.3, causal=causal)
        for g, w in zip(got, R.attention_backward(do, q, k, v, ro, rlse, 0.3, causal=causal)):
            assert_close(g, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_v8_reads_the_kv_cache_in_place(dtype):
    # a decode step as LlamaBlock.step makes it: 3 grouped query rows per key/value head
    # against the first L positions of a cache buffer longer than them (a strided view), over
    # several chunks of keys; the registry picks v8 for it and v7 for a training-shaped call
    from minillm.kernels.cpu.attention.decode import CHUNK

    rng = np.random.default_rng(5)
    B, Hkv, rep, D, L = 2, 3, 3, 64, 2 * CHUNK + 37
    cache = rng.standard_normal((2, B, Hkv, L + 50, D)).astype(dtype)
    k, v = cache[0, :, :, :L], cache[1, :, :, :L]
    assert not k.flags.c_contiguous
    q = rng.standard_normal((B, Hkv, rep, D)).astype(dtype)
    assert registry.rung_for("attention_forward", q, k, v, 0.125, False)[0] == 8
    o, lse = FWD.rung(8).run(q, k, v, 0.125, causal=False)
    ro, rlse = R.attention_forward(q, k, v, 0.125, causal=False)
    assert_close(o, ro)
    assert_close(lse, rlse)
    t = rng.standard_normal((B, Hkv, 20, D)).astype(dtype)
    assert registry.rung_for("attention_forward", t, t, t, 0.125, True)[0] == 7


@pytest.mark.parametrize("dtype", DTYPES)
def test_v7_reads_operands_through_any_strides(dtype):
    # v7 reads q, do and the score tiles in place through their strides, and packs k and v by
    # index: every operand here has a non-unit last stride, and the outputs are strided views too
    rng = np.random.default_rng(4)
    B, H, T, D = 2, 3, 53, 7
    big = [rng.standard_normal((B, H, T, 2 * D)).astype(dtype) for _ in range(4)]
    q, k, v, do = (x[..., ::2] for x in big)
    assert q.strides[-1] == 2 * q.itemsize
    scale = 0.4
    o_buf = np.zeros((B, T, H, D + 3), dtype=dtype)
    o = o_buf[..., :D].transpose(0, 2, 1, 3)  # (B, H, T, D) view into a wider buffer
    lse = np.empty((B, H, T), dtype=dtype)
    micro.attention_forward_v7(o, lse, q, k, v, dtype(scale), True)
    ro, rlse = R.attention_forward(q, k, v, scale, True)
    assert_close(np.ascontiguousarray(o), ro)
    assert_close(lse, rlse)
    assert (o_buf[..., D:] == 0).all()  # nothing written outside the view
    grads = [np.zeros((B, T, H, D), dtype=dtype).transpose(0, 2, 1, 3) for _ in range(3)]
    micro.attention_backward_v7(*grads, do, q, k, v, ro, rlse, dtype(scale), True)
    for g, w in zip(grads, R.attention_backward(do, q, k, v, ro, rlse, scale, True)):
        assert_close(np.ascontiguousarray(g), w)


@pytest.mark.parametrize("causal", [True, False])
def test_reference_backward_by_finite_differences(causal):
    # loss = sum(o * r); its gradient wrt o is r, so attention_backward(r, ...) must match
    # central differences of the loss in q, k and v (Tq < Tk exercises the causal offset)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 2, 3, 4))
    k, v = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((1, 2, 5, 4))
    r = rng.standard_normal((1, 2, 3, 4))
    scale, eps = 0.7, 1e-6

    def loss(q, k, v):
        return float(np.sum(R.attention_forward(q, k, v, scale, causal)[0] * r))

    o, lse = R.attention_forward(q, k, v, scale, causal)
    grads = R.attention_backward(r, q, k, v, o, lse, scale, causal)
    args = [q, k, v]
    for which, g in enumerate(grads):
        x = args[which]
        num = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + eps
            fp = loss(*args)
            x[i] = old - eps
            fm = loss(*args)
            x[i] = old
            num[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_blas_thread_count_is_set_and_restored():
    from minillm.kernels.cpu import _blas

    if not _blas.available():
        pytest.skip("no OpenBLAS whose thread count can be set")
    before = _blas.num_threads()
    with _blas.single_threaded():
        assert _blas.num_threads() == 1
        a = np.ones((70, 70), np.float32)
        assert float((a @ a)[3, 5]) == 70.0  # the BLAS still works single-threaded
    assert _blas.num_threads() == before
