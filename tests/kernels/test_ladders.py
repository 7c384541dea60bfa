"""Every rung of every CPU ladder against kernels/reference.py, and the registry's choices.

One test covers all versions of all ops: forward and backward kernels alike, on the odd-sized
inputs of tests/kernels/_inputs.py, in float32 and float64, through the parallel kernels and
their serial twins (tests/kernels/conftest.py). The edge cases of one op (strided views, causal
offsets, ignored rows, K = 0, ...) stay in tests/kernels/test_cpu_<op>.py.
"""

import zlib

import numpy as np
import pytest
from _inputs import CASES, call, extra_atol, rtol

from minillm.kernels import reference as R
from minillm.kernels import registry

pytest.importorskip("numba")

LADDERS = registry.ladders("cpu")
RUNGS = [(op, v) for op in sorted(LADDERS) for v in LADDERS[op].versions]
DTYPES = [np.float32, np.float64]


def assert_close(got, want, rt, what, extra=0.0):
    """|got - want| <= atol + rt |want|, atol scaled by the largest |want| (llm.c style)."""
    if want is None:
        assert got is None, what
        return
    atol = rt * 0.1 * max(1.0, float(np.abs(want).max())) if want.size else 0.0
    assert got.dtype == want.dtype and got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=rt, atol=atol + extra, err_msg=what)


def test_every_op_has_inputs_and_every_ladder_a_reference():
    assert set(CASES) == set(registry.ops())
    for op, lad in LADDERS.items():
        assert lad.device == "cpu" and hasattr(R, op)
        assert all(r.note for r in lad.rungs), op


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op,version", RUNGS, ids=[f"{op}-v{v}" for op, v in RUNGS])
def test_rung_matches_reference(op, version, dtype):
    rung = LADDERS[op].rung(version)
    for label, make in CASES[op]:
        args = make(np.random.default_rng(zlib.crc32(f"{op}{label}".encode())), dtype)
        reason = rung.reason_not(*args)
        if reason is not None:  # only a rung the registry chooses among may decline inputs
            # (qmatmul's GEMM rungs below GEMM_MIN_ROWS rows), and only ones another rung of
            # that choice takes; it is still checked on them below
            lad = LADDERS[op]
            chain = (lad.default, *lad.also)
            assert version in chain and any(lad.rung(v).reason_not(*args) is None
                                            for v in chain if v != version), \
                f"{op} v{version} refuses {label}: {reason}"
        want = call(op, getattr(R, op), args)
        got = call(op, rung.run, args)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, rtol(op, dtype), f"{op} v{version} {label} output {i}",
                         extra_atol(op, args, i))


def test_describe_names_a_version_for_every_op():
    rows = registry.describe(("cpu",))
    assert [r[0] for r in rows] == list(registry.ops())
    for op, device, runs, module, why in rows:
        assert device == "cpu" and why
        assert runs == "reference" or int(runs[1:]) in LADDERS[op].versions
    text = registry.format_rows(rows)
    assert "attention_forward" in text and "kernels.cpu.attention" in text


@pytest.mark.parametrize("op", sorted(LADDERS))
def test_numba_mode_runs_each_ladders_default(op):
    prev = registry.get_mode()
    registry.set_mode("numba")
    try:
        lad = LADDERS[op]
        fn = registry.get(op, np.zeros(1, np.float32))
        assert getattr(fn, "__wrapped__", fn) is lad.rung(lad.default).run
        row = next(r for r in registry.describe(("cpu",)) if r[0] == op)
        assert row[2] == f"v{lad.default}" and row[4].startswith("default")
        registry.set_mode("reference")
        assert registry.get(op, np.zeros(1)) is getattr(R, op)
    finally:
        registry.set_mode(prev)


def test_inputs_a_rung_does_not_fit_run_the_reference():
    prev = registry.get_mode()
    registry.set_mode("numba")
    try:
        x = np.linspace(-3, 3, 12, dtype=np.float16).reshape(3, 4)
        assert registry.rung_for("softmax_forward", x) == (None, "v3: float16 input")
        y = registry.get("softmax_forward", x)(x)
        assert y.dtype == np.float16
        np.testing.assert_allclose(y, R.softmax_forward(x), rtol=1e-3)
        a = np.arange(6).reshape(2, 3)  # integers: the BLAS rung declines, NumPy multiplies
        np.testing.assert_array_equal(registry.get("matmul", a)(a, a.T), a @ a.T)
    finally:
        registry.set_mode(prev)


def test_set_version_overrides_the_default_and_resets():
    lad = LADDERS["softmax_forward"]
    prev = registry.get_mode()
    registry.set_mode("numba")
    try:
        registry.set_version("softmax_forward", 1)
        assert registry.get("softmax_forward").__wrapped__ is lad.rung(1).run
        assert next(r for r in registry.describe(("cpu",)) if r[0] == "softmax_forward")[2] == "v1"
        with pytest.raises(KeyError):
            registry.set_version("softmax_forward", 99)
    finally:
        registry.set_version("softmax_forward", None)
        registry.set_mode(prev)
    assert registry.get("softmax_forward").__wrapped__ is lad.rung(lad.default).run


def test_unknown_kernel_and_mode_are_clear_errors():
    with pytest.raises(KeyError, match="no kernel named"):
        registry.get("softmax_sideways")
    with pytest.raises(ValueError, match="unknown kernel mode"):
        registry.set_mode("fast")


def test_minillm_kernels_prints_the_table(capsys):
    from minillm.cli import main

    prev = registry.get_mode()
    try:
        assert main(["kernels", "--mode", "numba"]) == 0
    finally:
        registry.set_mode(prev)
    out = capsys.readouterr().out
    assert "kernel mode: numba" in out
    lad = LADDERS["attention_forward"]
    assert any(line.split()[:3] == ["attention_forward", "cpu", f"v{lad.default}"]
               for line in out.splitlines())
