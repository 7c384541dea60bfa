"""Softmax / log-softmax: kernels/cpu/softmax.py versions vs kernels/reference.py.

Run as a script for the version table
(``python benchmarks/bench_softmax.py [--repeat K]``), or as a
pytest-benchmark suite (``pytest benchmarks/bench_softmax.py --benchmark-enable``).
Bytes per element (float32 = 4 B): forward reads x and writes y (2 x 4 B); backward reads dy and
y and writes dx (3 x 4 B).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import SMALL_N, TINY_N, VOCABS, bench_one, main, run_cases
from minillm.kernels import reference as R
from minillm.kernels.cpu import softmax as K

SHAPES = [(SMALL_N, V) for V in VOCABS] + [(TINY_N, 65)]


def _case(op, N, V):
    backward = op.endswith("backward")
    fwd = op.replace("backward", "forward")

    def make(dt):
        rng = np.random.default_rng(0)
        x = (3 * rng.standard_normal((N, V))).astype(dt)
        if not backward:
            return (x,)
        return rng.standard_normal((N, V)).astype(dt), getattr(R, fwd)(x)

    return dict(op=op, shape=f"{N}x{V}", make=make, ref=getattr(R, op),
                impl=lambda v, *a: K.run(op, v, *a), versions=sorted(K.VERSIONS[op]),
                default=K.DEFAULT_VERSION[op], nbytes=(3 if backward else 2) * N * V)


CASES = [_case(op, N, V) for op in K.VERSIONS for (N, V) in SHAPES]


def rows(all_versions=False):
    return run_cases(CASES, all_versions)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c['op']}-{c['shape']}" for c in CASES])
def test_softmax(benchmark, case, impl):
    bench_one(benchmark, case, impl)


if __name__ == "__main__":
    main(CASES, "softmax", sys.argv)
