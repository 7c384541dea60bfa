"""AdamW step: kernels/cpu/adamw.py versions vs kernels/reference.py.

Run as a script for the version table
(``python benchmarks/bench_adamw.py [--repeat K]``), or as a
pytest-benchmark suite (``pytest benchmarks/bench_adamw.py --benchmark-enable``).
Sizes: every parameter of the small GPT as one flat buffer (6 layers x 12 C^2 + embeddings,
about 10.75 M at C = 384), and one MLP weight (1536 x 384 = 0.59 M, cache-resident).
Bytes per parameter (float32 = 4 B): read p, g, m, v and write p, m, v: 7 x 4 B.
The step runs in place, so the timed calls keep updating the same buffers (the values stay
finite: lr is small and g fixed).
"""

import sys

import numpy as np
import pytest

from _cpu_bench import bench_one, main, run_cases
from minillm.kernels import reference as R
from minillm.kernels.cpu import adamw as K

SIZES = [("small GPT", 10_750_000), ("1536x384", 1536 * 384)]
HYPER = (3e-4, 0.9, 0.95, 1e-8, 0.1, 10)  # lr, beta1, beta2, eps, weight_decay, step


def _case(label, M):
    def make(dt):
        rng = np.random.default_rng(0)
        p = rng.standard_normal(M).astype(dt)
        g = rng.standard_normal(M).astype(dt)
        return p, g, (0.1 * g).astype(dt), (0.01 * g * g).astype(dt)

    def ref(p, g, m, v):
        R.adamw_step(p, g, m, v, *HYPER)
        return p, m, v

    def impl(version, p, g, m, v):
        K.run("adamw_step", version, p, g, m, v, *HYPER)
        return p, m, v

    return dict(op="adamw_step", shape=label, make=make, ref=ref, impl=impl,
                versions=sorted(K.VERSIONS["adamw_step"]), default=K.DEFAULT_VERSION["adamw_step"],
                nbytes=7 * M)


CASES = [_case(label, M) for label, M in SIZES]


def rows(all_versions=False):
    return run_cases(CASES, all_versions)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES, ids=[c["shape"].replace(" ", "_") for c in CASES])
def test_adamw(benchmark, case, impl):
    bench_one(benchmark, case, impl)


if __name__ == "__main__":
    main(CASES, "AdamW", sys.argv)
