"""Layer norm: kernels/cpu/layernorm.py versions vs kernels/reference.py.

Run as a script for the version table
(``python benchmarks/bench_layernorm.py [--repeat K]``), or as a
pytest-benchmark suite (``pytest benchmarks/bench_layernorm.py --benchmark-enable``).
Bytes (float32 = 4 B; w, b, mean, rstd, dw, db are vectors, left out): the forward reads x and
writes y (2 N C x 4 B); the backward reads dy and x and writes dx (3 N C x 4 B).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import SMALL_C, SMALL_N, TINY_C, TINY_N, bench_one, main, run_cases
from minillm.kernels import reference as R
from minillm.kernels.cpu import layernorm as K

SHAPES = [(SMALL_N, SMALL_C), (TINY_N, TINY_C)]


def _case(op, N, C):
    def make(dt):
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((N, C)) + 0.5).astype(dt)
        w = (1 + 0.1 * rng.standard_normal(C)).astype(dt)
        b = (0.1 * rng.standard_normal(C)).astype(dt)
        if op == "layernorm_forward":
            return x, w, b, 1e-5
        _, mean, rstd = R.layernorm_forward(x, w, b, 1e-5)
        return rng.standard_normal((N, C)).astype(dt), x, w, mean, rstd

    return dict(op=op, shape=f"{N}x{C}", make=make, ref=getattr(R, op),
                impl=lambda v, *a: K.run(op, v, *a), versions=sorted(K.VERSIONS[op]),
                default=K.DEFAULT_VERSION[op], nbytes=(2 if op.endswith("forward") else 3) * N * C)


CASES = [_case(op, N, C) for op in K.VERSIONS for (N, C) in SHAPES]


def rows(all_versions=False):
    return run_cases(CASES, all_versions)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c['op']}-{c['shape']}" for c in CASES])
def test_layernorm(benchmark, case, impl):
    bench_one(benchmark, case, impl)


if __name__ == "__main__":
    main(CASES, "layer norm", sys.argv)
