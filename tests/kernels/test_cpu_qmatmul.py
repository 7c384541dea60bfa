"""kernels/cpu/qmatmul.py (every rung, every block format) against dequantize-then-matmul, and
kernels/quant.py's block formats against the gguf package's own NumPy code (the oracle)."""

import zlib

import numpy as np
import pytest
from minillm.kernels import quant as Q
from minillm.kernels import reference as R
from minillm.kernels.cpu import qmatmul as K

gguf = pytest.importorskip("gguf")
from gguf import quants as gq

FORMATS = [Q.Q8_0, Q.Q4_0, Q.Q4_1]
SHAPES = [(N, O, Kd) for N in (1, 3, 17) for O in (7, 33) for Kd in (64, 96)]


def weights(shape, seed=0):
    rng = np.random.default_rng(zlib.crc32(repr((shape, seed)).encode()))
    w = rng.standard_normal(shape) * rng.uniform(0.01, 2.0, (shape[0], 1))
    w[0, :32] = 0.0  # an all-zero block: scale 0
    if shape[0] > 1:
        w[1, :32] = 0.75  # a constant block (Q4_1 range 0)
    return w.astype(np.float32)


def rungs(op):
    (ladder,) = [lad for lad in K.LADDERS if lad.op == op]
    return [(ladder.rung(v), v) for v in ladder.versions]


def tol_close(got, want, dtype, scale):
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: Q.FORMATS[t].name)
@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_forward_rung_matches_dequantize_then_matmul(version, qtype, shape, dtype):
    N, O, Kd = shape
    qw = Q.QuantWeight.from_float(weights((O, Kd)), qtype)
    x = np.random.default_rng(N * O + Kd).standard_normal((N, Kd)).astype(dtype)
    rung = {v: r for r, v in rungs("qmatmul_forward")}[version]
    got = rung.run(x, qw)
    assert got.dtype == dtype and got.shape == (N, O)
    want = R.qmatmul_forward(x, qw)  # in x's dtype
    w64 = qw.dequantize().astype(np.float64)
    exact = x.astype(np.float64) @ w64.T  # float64 math
    scale = float(np.abs(x).sum(axis=1).max() * np.abs(w64).max())
    tol_close(got, want, dtype, scale)
    tol_close(got, exact, dtype, scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: Q.FORMATS[t].name)
@pytest.mark.parametrize("version", [1, 2, 3])
def test_backward_input_rung_matches_reference(version, qtype, shape, dtype):
    N, O, Kd = shape
    qw = Q.QuantWeight.from_float(weights((O, Kd), 1), qtype)
    dy = np.random.default_rng(N + O + Kd).standard_normal((N, O)).astype(dtype)
    rung = {v: r for r, v in rungs("qmatmul_backward_input")}[version]
    got = rung.run(dy, qw)
    assert got.dtype == dtype and got.shape == (N, Kd)
    w64 = qw.dequantize().astype(np.float64)
    scale = float(np.abs(dy).sum(axis=1).max() * np.abs(w64).max())
    tol_close(got, R.qmatmul_backward_input(dy, qw), dtype, scale)
    tol_close(got, dy.astype(np.float64) @ w64, dtype, scale)


def test_ladders_declare_defaults_and_refuse_other_formats():
    ops = {lad.op: lad for lad in K.LADDERS}
    assert set(ops) == {"qmatmul_forward", "qmatmul_backward_input"}
    assert ops["qmatmul_forward"].default == 3 and ops["qmatmul_backward_input"].default == 2
    assert ops["qmatmul_forward"].versions == (1, 2, 3, 4)
    assert ops["qmatmul_backward_input"].versions == (1, 2, 3)
    qw = Q.QuantWeight.from_float(weights((3, 32)), Q.F16)
    assert ops["qmatmul_forward"].rung(3).reason_not(np.zeros((1, 32)), qw)
    with pytest.raises(TypeError, match="Q8_0, Q4_0 or Q4_1"):
        K.run("qmatmul_forward", 3, np.zeros((1, 32), np.float32), qw)
    # the default sends formats without a kernel to the reference
    x = np.ones((2, 32), np.float32)
    np.testing.assert_array_equal(K.qmatmul_forward(x, qw), R.qmatmul_forward(x, qw))
    np.testing.assert_array_equal(K.qmatmul_backward_input(x[:, :3], qw),
                                  R.qmatmul_backward_input(x[:, :3], qw))
    qw = Q.QuantWeight.from_float(weights((3, 32)), Q.Q8_0)
    with pytest.raises(ValueError, match=r"\(N, 32\)"):
        K.qmatmul_forward(np.zeros((1, 31), np.float32), qw)


def test_defaults_switch_to_the_gemm_rungs_for_many_rows(monkeypatch):
    qw = Q.QuantWeight.from_float(weights((7, 64)), Q.Q8_0)
    calls = []
    monkeypatch.setitem(K.FORWARD, 4, lambda out, x, *a: calls.append(("fwd", len(x))))
    monkeypatch.setitem(K.BACKWARD_INPUT, 3, lambda dx, dy, *a: calls.append(("bwd", len(dy))))
    K.qmatmul_forward(np.zeros((K.GEMM_MIN_ROWS, 64), np.float32), qw)
    K.qmatmul_forward(np.zeros((K.GEMM_MIN_ROWS - 1, 64), np.float32), qw)
    K.qmatmul_backward_input(np.zeros((K.GEMM_MIN_ROWS, 7), np.float32), qw)
    assert calls == [("fwd", K.GEMM_MIN_ROWS), ("bwd", K.GEMM_MIN_ROWS)]


@pytest.mark.parametrize("version", [("qmatmul_forward", 4), ("qmatmul_backward_input", 3)])
def test_gemm_rungs_in_several_panels(monkeypatch, version):
    op, v = version
    monkeypatch.setattr(K, "PANEL_ELEMS", 40 * 64)  # 40 rows a panel: (40, 40, 20) for O = 100
    qw = Q.QuantWeight.from_float(weights((100, 64), 7), Q.Q4_1)
    a = np.random.default_rng(8).standard_normal((17, 64 if v == 4 else 100)).astype(np.float32)
    got, want = K.run(op, v, a, qw), getattr(R, op)(a, qw)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


def test_empty_batch():
    qw = Q.QuantWeight.from_float(weights((5, 64)), Q.Q4_1)
    assert K.qmatmul_forward(np.zeros((0, 64), np.float32), qw).shape == (0, 5)


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
    for version in (1, 2, 3, 4):
        np.testing.assert_array_equal(K.run("qmatmul_forward", version, x, ro),
                                      K.run("qmatmul_forward", version, x, qw))
    np.testing.assert_array_equal(K.qmatmul_backward_input(x[:, :33], ro),
                                  K.qmatmul_backward_input(x[:, :33], qw))
