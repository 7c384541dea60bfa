"""GELU and bias+GELU: kernels/cpu/gelu.py versions vs kernels/reference.py.

Run as a script for the version table
(``python benchmarks/bench_gelu.py [--repeat K]``), or as a
pytest-benchmark suite (``pytest benchmarks/bench_gelu.py --benchmark-enable``).
Shapes: the MLP hidden activation (N, 4C): small (2048, 1536), tiny (768, 512).
Bytes (float32 = 4 B; b and db are vectors, left out): the forward reads x and writes y
(2 N C x 4 B); the backward reads dy and x and writes dx (3 N C x 4 B).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import SMALL_C, SMALL_N, TINY_C, TINY_N, bench_one, main, run_cases
from minillm.kernels import reference as R
from minillm.kernels.cpu import gelu as K

SHAPES = [(SMALL_N, 4 * SMALL_C), (TINY_N, 4 * TINY_C)]


def _case(op, N, C):
    def make(dt):
        rng = np.random.default_rng(0)
        x = (2 * rng.standard_normal((N, C))).astype(dt)
        b = (0.1 * rng.standard_normal(C)).astype(dt)
        dy = rng.standard_normal((N, C)).astype(dt)
        return {"gelu_forward": (x,), "gelu_backward": (dy, x),
                "bias_gelu_forward": (x, b), "bias_gelu_backward": (dy, x, b)}[op]

    return dict(op=op, shape=f"{N}x{C}", make=make, ref=getattr(R, op),
                impl=lambda v, *a: K.run(op, v, *a), versions=sorted(K.VERSIONS[op]),
                default=K.DEFAULT_VERSION[op], nbytes=(2 if op.endswith("forward") else 3) * N * C)


CASES = [_case(op, N, C) for op in K.VERSIONS for (N, C) in SHAPES]


def rows(all_versions=False):
    return run_cases(CASES, all_versions)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c['op']}-{c['shape']}" for c in CASES])
def test_gelu(benchmark, case, impl):
    bench_one(benchmark, case, impl)


if __name__ == "__main__":
    main(CASES, "GELU", sys.argv)
