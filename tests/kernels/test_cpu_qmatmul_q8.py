"""kernels/cpu/qmatmul_q8.py beyond tests/kernels/test_ladders.py (which runs every rung against
the reference): the rounding of x is GGML's Q8_0 quantizer bit for bit, v2's rows do not depend
on their batch, and the registry runs v2 where the CPU has AVX-512 VNNI."""

import numpy as np
import pytest
from _inputs import quant_weight

pytest.importorskip("numba")

from minillm.kernels import quant as Q  # noqa: E402
from minillm.kernels import reference as R  # noqa: E402
from minillm.kernels import registry  # noqa: E402
from minillm.kernels.cpu import qmatmul_q8 as K  # noqa: E402

needs_vnni = pytest.mark.skipif(not K.VNNI, reason="no AVX-512 VNNI on this CPU")


def _rows(rng):
    x = rng.standard_normal((6, 160)).astype(np.float32)
    x[0, :32] = 0.0  # scale 0
    x[1, :32] = 1e-4 * rng.standard_normal(32)  # scale in float16's subnormals
    x[2, :32] = np.arange(32) - 15.5  # halves: 127 / 16 steps land between codes
    x[2, 32:64] = (np.arange(32) - 16) * np.float32(0.5)  # |x| = 127 d exactly for one value
    x[3] *= 1000.0
    x[4, :32] = 5e6 * rng.standard_normal(32)  # d beyond float16's largest: inf
    x[5, 64:96] = -3.0  # one value for the whole block
    return x


def test_rounding_is_ggml_q8_0_bit_for_bit():
    x = _rows(np.random.default_rng(0))
    q, d, s = K.quantize_rows(x)
    with np.errstate(over="ignore"):  # row 4's scale
        raw = Q.quantize(x, Q.Q8_0).reshape(x.shape[0], -1, 34)
    want_d = raw[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    want_q = raw[..., 2:].copy().view(np.int8).reshape(x.shape)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(d, want_d)  # inf for row 4's first block, as the file's
    assert np.isinf(d[4, 0]) and d[0, 0] == 0 and 0 < d[1, 0] < 2.0**-14
    np.testing.assert_array_equal(s, want_q.reshape(6, -1, 32).astype(np.int32).sum(-1))


def test_float16_rounding_of_scales_equals_numpy():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 0x7F800000, 3000, dtype=np.uint32)  # positive finite floats
    edges = np.array([0x477FE000, 0x477FEFFF, 0x477FF000, 0x38800000, 0x387FFFFF, 0x33000000,
                      0x33000001, 0x00000001, 0], dtype=np.uint32)  # 65504, 65520, 2^-14, ...
    v = np.concatenate([bits, edges]).view(np.float32)
    with np.errstate(over="ignore"):
        want = v.astype(np.float16).astype(np.float32)
    got = np.array([K._f16(a) for a in v], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    # and through the quantizer: one value w per block, d = w / 127 rounded as numpy rounds it
    w = (v[v < 1e30] * np.float32(127))[:, None] * np.eye(1, 32, dtype=np.float32)
    _, d, _ = K.quantize_rows(w.reshape(1, -1))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(
            d[0], (w[:, 0] / np.float32(127)).astype(np.float16).astype(np.float32))


@needs_vnni
@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=["q8_0", "q4_0", "q4_1"])
def test_v2_gives_each_row_the_bits_it_gets_alone(qtype):
    qw = quant_weight((96, 224), qtype).to_groups()
    x = np.random.default_rng(2).standard_normal((19, 224)).astype(np.float32)
    alone = np.concatenate([K.qmatmul_q8_forward_v2(x[i:i + 1], qw) for i in range(19)])
    for n in (2, 3, 5, 8, 9, 19):  # one call of n rows; 9 and 19: calls of 8 and the rest
        np.testing.assert_array_equal(K.qmatmul_q8_forward_v2(x[:n], qw), alone[:n])
    want = R.qmatmul_q8_forward(x, qw)
    np.testing.assert_allclose(alone, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_q8_differs_from_float_activations_by_the_rounding_of_x():
    # not the float product: the test above would pass for qmatmul_forward's kernels otherwise
    qw = quant_weight((64, 96), Q.Q4_1).to_groups()
    x = np.random.default_rng(3).standard_normal((4, 96)).astype(np.float32)
    y8 = registry.get("qmatmul_q8_forward", x)(x, qw)
    y = R.qmatmul_forward(x, qw)
    rel = np.abs(y8 - y).max() / np.abs(y).max()
    assert 1e-5 < rel < 2e-2


def test_registry_runs_v2_on_grouped_float32_with_vnni_else_v1():
    qw = quant_weight((64, 96), Q.Q4_1)
    x = np.zeros((3, 96), np.float32)
    want = 2 if K.VNNI else 1
    assert registry.rung_for("qmatmul_q8_forward", x, qw.to_groups())[0] == want
    assert registry.rung_for("qmatmul_q8_forward", x, qw)[0] == 1  # GGUF's row layout
    assert registry.rung_for("qmatmul_q8_forward", x.astype(np.float64), qw.to_groups())[0] == 1


def test_bad_shapes_and_formats_are_clear_errors():
    qw = quant_weight((64, 96), Q.Q8_0).to_groups()
    for version in (1, 2):
        run = registry.ladder("qmatmul_q8_forward").rung(version).run
        with pytest.raises(ValueError, match=r"x must be \(N, 96\)"):
            run(np.zeros((2, 64), np.float32), qw)
        with pytest.raises(TypeError, match="Q8_0, Q4_0 or Q4_1"):
            run(np.zeros((2, 96), np.float32), np.zeros((64, 96), np.float32))
        assert run(np.zeros((0, 96), np.float32), qw).shape == (0, 64)


def test_the_ir_kernels_cache_entries_follow_their_ir_source(tmp_path):
    # Numba's on-disk cache checks a kernel's own file only; the kernels that inline
    # _groupdot*.py's IR carry a tag of that source in their names, so an edit compiles anew
    from minillm.kernels.cpu import _groupdot, _groupdot_q8
    from minillm.kernels.cpu import qmatmul as K8
    from minillm.kernels.cpu._serial import source_tag

    tag = source_tag(_groupdot, _groupdot_q8)
    assert all(k.py_func.__name__.endswith("_" + tag) for k in K._V2.values())
    assert all(k.py_func.__name__.endswith("_" + source_tag(_groupdot)) for k in K8._V8.values())
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("x = 2\n")
    mod = type("M", (), {})
    ma, mb = mod(), mod()
    ma.__file__, mb.__file__ = str(a), str(b)
    assert source_tag(ma) != source_tag(mb) and len(source_tag(ma)) == 8
