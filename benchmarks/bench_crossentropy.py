"""Fused softmax cross-entropy: kernels/cpu/crossentropy.py versions vs kernels/reference.py.

Run as a script for the version table
(``python benchmarks/bench_crossentropy.py [--repeat K]``), or as a
pytest-benchmark suite (``pytest benchmarks/bench_crossentropy.py --benchmark-enable``).
Bytes (float32 = 4 B; targets and lse are N-vectors, left out): the forward reads the logits
once (N V x 4 B); the backward reads the logits and writes dlogits (2 N V x 4 B).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import SMALL_N, TINY_N, VOCABS, bench_one, main, run_cases
from minillm.kernels import reference as R
from minillm.kernels.cpu import crossentropy as K

SHAPES = [(SMALL_N, V) for V in VOCABS] + [(TINY_N, 65)]


def _case(op, N, V):
    def make(dt):
        rng = np.random.default_rng(0)
        logits = (3 * rng.standard_normal((N, V))).astype(dt)
        t = rng.integers(0, V, N)
        t[::10] = -100  # some ignored rows, as with padding or prompt tokens
        if op == "cross_entropy_forward":
            return logits, t
        _, lse = R.cross_entropy_forward(logits, t)
        return np.asarray(1.0, dtype=dt), logits, lse, t

    return dict(op=op, shape=f"{N}x{V}", make=make, ref=getattr(R, op),
                impl=lambda v, *a: K.run(op, v, *a), versions=sorted(K.VERSIONS[op]),
                default=K.DEFAULT_VERSION[op], nbytes=(1 if op.endswith("forward") else 2) * N * V)


CASES = [_case(op, N, V) for op in K.VERSIONS for (N, V) in SHAPES]


def rows(all_versions=False):
    return run_cases(CASES, all_versions)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c['op']}-{c['shape']}" for c in CASES])
def test_crossentropy(benchmark, case, impl):
    bench_one(benchmark, case, impl)


if __name__ == "__main__":
    main(CASES, "cross-entropy", sys.argv)
