"""Llama ops: kernels/cpu/rmsnorm.py, rope.py and swiglu.py versions vs kernels/reference.py.

Run as a script for the version table
(``python benchmarks/bench_llama_ops.py [--repeat K] [--tiny]``), or as a pytest-benchmark
suite (``pytest benchmarks/bench_llama_ops.py --benchmark-enable``). Shapes: SmolLM2-135M
prefilling 512 tokens (C = 576, 9 query / 3 key-value heads of D = 64, F = 1536); ``--tiny``
shrinks them to check the script runs.
Bytes (float32 = 4 B; vectors left out): rms_norm forward reads x, writes y (2 N C), backward
reads dy, x, writes dx (3 N C); rope reads and writes x (2 B H T D; cos/sin are shared by the
heads); swiglu forward reads gate, up, writes y (3 N F), backward reads 3, writes 2 (5 N F).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import bench_one, main, run_cases
from minillm.kernels import reference as R
from minillm.kernels.cpu import rmsnorm, rope, swiglu

TINY = "--tiny" in sys.argv
N, C, F = (37, 48, 80) if TINY else (512, 576, 1536)
ROPE_SHAPES = [(1, 3, 37, 16)] if TINY else [(1, 9, 512, 64), (1, 3, 512, 64)]  # q and k


def _ladder(module, op):
    (lad,) = [x for x in module.LADDERS if x.op == op]
    return lad


def _case(module, op, shape, make, nbytes):
    lad = _ladder(module, op)
    return dict(op=op, shape="x".join(map(str, shape)), make=make, ref=getattr(R, op),
                impl=lambda v, *a: lad.rung(v).run(*a), versions=list(lad.versions),
                default=lad.default, nbytes=nbytes)


def _rms(op):
    def make(dt):
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((N, C)) + 0.5).astype(dt)
        w = (1 + 0.1 * rng.standard_normal(C)).astype(dt)
        if op == "rms_norm_forward":
            return x, w, 1e-5
        _, rrms = R.rms_norm_forward(x, w, 1e-5)
        return rng.standard_normal((N, C)).astype(dt), x, w, rrms

    return _case(rmsnorm, op, (N, C), make, (2 if op.endswith("forward") else 3) * N * C)


def _rope(op, shape, interleaved):
    def make(dt):
        x = np.random.default_rng(0).standard_normal(shape).astype(dt)
        cos, sin = R.rope_cos_sin(np.arange(shape[2]), shape[3], 100000.0, dtype=dt)
        return x, cos, sin, interleaved

    case = _case(rope, op, shape, make, 2 * int(np.prod(shape)))
    case["op"] += " pairs" if interleaved else " halves"
    return case


def _swiglu(op):
    def make(dt):
        rng = np.random.default_rng(0)
        a = [(rng.standard_normal((N, F)) * 2).astype(dt) for _ in range(3)]
        return (a[0], a[1]) if op == "swiglu_forward" else (a[2], a[0], a[1])

    return _case(swiglu, op, (N, F), make, (3 if op.endswith("forward") else 5) * N * F)


CASES = ([_rms(op) for op in ("rms_norm_forward", "rms_norm_backward")]
         + [_rope("rope_forward", s, il) for s in ROPE_SHAPES for il in (False, True)]
         + [_swiglu(op) for op in ("swiglu_forward", "swiglu_backward")])


def rows(all_versions=False):
    return run_cases(CASES, all_versions)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c['op']}-{c['shape']}" for c in CASES])
def test_llama_ops(benchmark, case, impl):
    bench_one(benchmark, case, impl)


if __name__ == "__main__":
    main(CASES, "Llama ops", sys.argv)
