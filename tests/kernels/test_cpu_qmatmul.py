"""kernels/cpu/qmatmul.py beyond tests/kernels/test_ladders.py (which runs every rung against
dequantize-then-matmul in every block format): float64 math, the ladders' GEMM row rule, other
formats, several panels, read-only blocks; and kernels/quant.py's block formats against the gguf
package's own NumPy code (the oracle)."""

import zlib

import numpy as np
import pytest
from _inputs import QMATMUL, quant_weight

from minillm.kernels import quant as Q
from minillm.kernels import reference as R
from minillm.kernels import registry

pytest.importorskip("numba")
gguf = pytest.importorskip("gguf")
from gguf import quants as gq  # noqa: E402

from minillm.kernels.cpu import qmatmul as K  # noqa: E402

FORMATS = [Q.Q8_0, Q.Q4_0, Q.Q4_1]
OPS = ("qmatmul_forward", "qmatmul_backward_input")


def weights(shape, seed=0):
    rng = np.random.default_rng(zlib.crc32(repr((shape, seed)).encode()))
    w = rng.standard_normal(shape) * rng.uniform(0.01, 2.0, (shape[0], 1))
    w[0, :32] = 0.0  # an all-zero block: scale 0
    if shape[0] > 1:
        w[1, :32] = 0.75  # a constant block (Q4_1 range 0)
    return w.astype(np.float32)


def rung(op, version):
    return registry.ladder(op).rung(version)


@pytest.fixture
def numba_mode():
    prev = registry.get_mode()
    registry.set_mode("numba")
    yield
    registry.set_mode(prev)


def tol_close(got, want, dtype, scale):
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: Q.FORMATS[t].name)
@pytest.mark.parametrize("op", OPS)
def test_every_rung_equals_float64_math(op, qtype, dtype):
    """Each rung against x W^T (dy W) computed in float64 from the dequantized weights: the
    products keep x in its dtype and only W is rounded (to its blocks)."""
    for n, o, k in QMATMUL:  # x (n, k) or dy (n, o), W (o, k)
        qw = quant_weight((o, k), qtype, 0 if op == "qmatmul_forward" else 1)
        w64 = qw.dequantize().astype(np.float64)
        a = np.random.default_rng(n * o + k).standard_normal(
            (n, k if op == "qmatmul_forward" else o)).astype(dtype)
        exact = a.astype(np.float64) @ (w64.T if op == "qmatmul_forward" else w64)
        scale = float(np.abs(a).sum(axis=1).max() * np.abs(w64).max())
        for v in registry.ladder(op).versions:
            got = rung(op, v).run(a, qw)
            assert got.dtype == dtype and got.shape == exact.shape
            tol_close(got, exact, dtype, scale)


def test_ladders_declare_defaults_and_refuse_other_formats(numba_mode):
    fwd, bwd = registry.ladder("qmatmul_forward"), registry.ladder("qmatmul_backward_input")
    assert (fwd.default, fwd.also, fwd.versions) == (8, (7, 6, 4, 5), (1, 2, 3, 4, 5, 6, 7, 8))
    assert (bwd.default, bwd.also, bwd.versions) == (3, (2,), (1, 2, 3))
    qw = Q.QuantWeight.from_float(weights((3, 32)), Q.F16)
    x = np.ones((2, 32), np.float32)
    for op, a in (("qmatmul_forward", x), ("qmatmul_backward_input", x[:, :3])):
        lad = registry.ladder(op)
        assert all(lad.rung(v).reason_not(a, qw) == "F16 weight" for v in lad.versions)
        assert registry.rung_for(op, a, qw) == (None, f"v{lad.default}: F16 weight")
        # the registry sends formats without a kernel to the reference
        np.testing.assert_array_equal(registry.get(op, a)(a, qw), getattr(R, op)(a, qw))
    with pytest.raises(TypeError, match="Q8_0, Q4_0 or Q4_1"):
        rung("qmatmul_forward", 3).run(np.zeros((1, 32), np.float32), qw)
    qw = Q.QuantWeight.from_float(weights((3, 32)), Q.Q8_0)
    with pytest.raises(ValueError, match=r"\(N, 32\)"):
        registry.get("qmatmul_forward", x)(np.zeros((1, 31), np.float32), qw)


@pytest.mark.parametrize("v8_rows", [16, None], ids=["avx2", "avx512"])
def test_defaults_switch_to_the_gemm_rungs_for_many_rows(numba_mode, monkeypatch, v8_rows):
    machine = K.V8_MAX_ROWS
    monkeypatch.setattr(K, "V8_MAX_ROWS", v8_rows)  # each machine's rule, on any machine
    qw = Q.QuantWeight.from_float(weights((7, 64)), Q.Q8_0)
    n = K.GEMM_MIN_ROWS
    few = f"fewer than {n} rows"
    assert min(s[0] for s in QMATMUL) < n <= max(s[0] for s in QMATMUL)  # the cases cross it
    row_layout = "v8: a weight in GGUF's row layout"
    assert registry.rung_for("qmatmul_forward", np.zeros((n, 64), np.float32), qw) == \
        (4, row_layout)
    assert registry.rung_for("qmatmul_forward", np.zeros((n - 1, 64), np.float32), qw) == \
        (5, row_layout)
    grouped = Q.QuantWeight.from_float(weights((64, 64)), Q.Q8_0).to_groups()
    # v8_rows None (AVX-512): v8 takes every row count
    for N in (1, v8_rows or 40, 300):  # one token, a server's batch, a prompt
        if v8_rows is None or N <= v8_rows:
            want = (8, "default")
        else:  # with AVX2, larger batches and prompts run on the packed panels of v7
            want = (7, f"v8: more than {v8_rows} rows")
        assert registry.rung_for("qmatmul_forward", np.zeros((N, 64), np.float32), grouped) == \
            want
    assert registry.rung_for("qmatmul_backward_input", np.zeros((n, 7), np.float32), qw) == \
        (3, "default")
    assert registry.rung_for("qmatmul_backward_input", np.zeros((1, 7), np.float32), qw) == \
        (2, f"v3: {few}")
    rows = {r[0]: r for r in registry.describe(("cpu",))}
    v8_rule = "" if machine is None else f" and at most {machine} rows"  # this machine's
    assert f"in row groups{v8_rule}, else v7, then v6, then v4, then v5, then the reference" \
        in rows["qmatmul_forward"][4]
    assert f"{n} rows or more, else v2, then the reference" in rows["qmatmul_backward_input"][4]
    for N in sorted({1, 2, 5, v8_rows or 40, (v8_rows or 40) + 1, n - 1, n}):  # each rule's sides
        x = np.random.default_rng(N).standard_normal((N, 64)).astype(np.float32)
        for w in (qw, grouped):
            want = R.qmatmul_forward(x, w)
            np.testing.assert_allclose(registry.get("qmatmul_forward", x)(x, w), want,
                                       rtol=2e-5, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("version", [("qmatmul_forward", 4), ("qmatmul_backward_input", 3)])
def test_gemm_rungs_in_several_panels(monkeypatch, version):
    op, v = version
    monkeypatch.setattr(K, "PANEL_ELEMS", 40 * 64)  # 40 rows a panel: (40, 40, 20) for O = 100
    qw = Q.QuantWeight.from_float(weights((100, 64), 7), Q.Q4_1)
    a = np.random.default_rng(8).standard_normal((17, 64 if v == 4 else 100)).astype(np.float32)
    got, want = rung(op, v).run(a, qw), getattr(R, op)(a, qw)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


def test_empty_batch():
    qw = Q.QuantWeight.from_float(weights((5, 64)), Q.Q4_1)
    x = np.zeros((0, 64), np.float32)
    assert registry.get("qmatmul_forward", x)(x, qw).shape == (0, 5)
    for v in registry.ladder("qmatmul_forward").versions:
        assert rung("qmatmul_forward", v).run(x, qw).shape == (0, 5)


# --------------------------------------------------------------------------- block formats
@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1],
                         ids=lambda t: Q.FORMATS[t].name)
def test_quantize_and_dequantize_equal_the_gguf_package(qtype):
    w = weights((9, 96), 2)
    w[2, 5] = np.float32(0.49999997)  # a value floor(x + 0.5) would round the wrong way
    mine = Q.quantize(w, qtype)
    theirs = np.asarray(gq.quantize(w, gguf.GGMLQuantizationType(qtype))).view(np.uint8)
    np.testing.assert_array_equal(mine, theirs.reshape(mine.shape))
    got = Q.dequantize(mine, qtype, w.shape)
    want = gq.dequantize(theirs, gguf.GGMLQuantizationType(qtype)).reshape(w.shape)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("qtype", [Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K],
                         ids=lambda t: Q.FORMATS[t].name)
def test_dequantize_other_formats_equals_the_gguf_package(qtype):
    f = Q.FORMATS[qtype]
    rng = np.random.default_rng(qtype)
    raw = rng.integers(0, 256, (3, 2 * f.type_size), dtype=np.uint8)  # any bytes: both sides
    # must agree even where a random scale spells inf or nan (assert_array_equal matches nans)
    shape = (3, 2 * f.block_size)
    with np.errstate(all="ignore"):
        got = Q.dequantize(raw, qtype, shape)
        want = gq.dequantize(raw, gguf.GGMLQuantizationType(qtype)).reshape(shape)
    np.testing.assert_array_equal(got, want)


def test_quant_weight_rows_and_sizes():
    w = weights((11, 64), 3)
    qw = Q.QuantWeight.from_float(w, "q4_1")
    assert qw.qtype == Q.Q4_1 and qw.blocks.shape == (11, 40) and qw.nbytes == 440
    assert qw.bits_per_weight == 5.0
    np.testing.assert_array_equal(qw.rows(np.array([[3, 0], [10, 3]])),
                                  qw.dequantize()[[[3, 0], [10, 3]]])
    assert np.abs(qw.dequantize() - w).max() <= np.abs(w).max() / 15
    with pytest.raises(ValueError, match="not supported"):
        Q.block_format(99)
    with pytest.raises(ValueError, match="multiple of 32"):
        Q.QuantWeight.from_float(np.zeros((2, 40)), Q.Q8_0)


def test_read_only_blocks_as_mapped_from_a_file():
    qw = Q.QuantWeight.from_float(weights((33, 96), 4), Q.Q4_1)
    blocks = qw.blocks.copy()
    blocks.flags.writeable = False
    ro = Q.QuantWeight(Q.Q4_1, qw.shape, blocks)
    x = np.random.default_rng(5).standard_normal((3, 96)).astype(np.float32)
    for version in registry.ladder("qmatmul_forward").versions:
        run = rung("qmatmul_forward", version).run
        np.testing.assert_array_equal(run(x, ro), run(x, qw))
    for version in registry.ladder("qmatmul_backward_input").versions:
        run = rung("qmatmul_backward_input", version).run
        np.testing.assert_array_equal(run(x[:, :33], ro), run(x[:, :33], qw))


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=lambda t: Q.FORMATS[t].name)
def test_row_groups_hold_the_same_weights(qtype):
    qw = Q.QuantWeight.from_float(weights((96, 64), 6), qtype)
    g = qw.to_groups()
    assert g.grouped and g.blocks.shape == qw.blocks.shape and g.nbytes == qw.nbytes
    assert not np.array_equal(g.blocks, qw.blocks)  # a different order of the bytes
    np.testing.assert_array_equal(g.to_rows().blocks, qw.blocks)
    np.testing.assert_array_equal(g.row_blocks, qw.blocks)
    np.testing.assert_array_equal(g.dequantize(), qw.dequantize())
    idx = np.array([[0, 95], [31, 32]])  # rows at both ends of groups
    np.testing.assert_array_equal(g.rows(idx), qw.dequantize()[idx])
    assert g.to_groups() is g and qw.to_rows() is qw
    odd = Q.QuantWeight.from_float(weights((33, 64), 6), qtype)
    assert odd.to_groups() is odd  # rows not a multiple of GROUP stay in the row layout
    with pytest.raises(ValueError, match="row groups"):
        Q.QuantWeight(qtype, odd.shape, odd.blocks, grouped=True)
    # one group's first block, by hand: the GROUP scales first, codes of all rows side by side
    first = g.blocks.reshape(-1)[:2 * Q.GROUP].reshape(Q.GROUP, 2)
    np.testing.assert_array_equal(first, qw.blocks[:Q.GROUP, :2])
