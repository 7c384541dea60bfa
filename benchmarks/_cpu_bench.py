"""Shared helpers of the kernel benchmarks (bench_kernels.py): timing and validation.

``best_ms`` times the fastest of many single calls; ``assert_close`` compares a kernel's outputs
with the reference's, so that a wrong kernel is never timed.
"""

import time

import numpy as np


def best_ms(fn, min_time=0.2, min_calls=15, max_calls=2000):
    """Fastest single call, in ms. The machine is shared and has 2 cores: a parallel kernel
    whose second thread is descheduled waits a whole 4 ms time slice, so averages over
    batches measure the neighbours; the fastest call measures the code."""
    fn()  # warm-up: JIT compile (or cache load), page-in of fresh outputs
    fn()
    times = []
    end = time.perf_counter() + min_time
    while len(times) < min_calls or (time.perf_counter() < end and len(times) < max_calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def _leaves(out):
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _leaves(o)]
    return [] if out is None else [np.asarray(out)]


def assert_close(got, want, what, rtol=None):
    """atol + rtol*|ref| with atol relative to the largest |ref| (outputs span many scales)."""
    g, w = _leaves(got), _leaves(want)
    assert len(g) == len(w), f"{what}: {len(g)} outputs, reference has {len(w)}"
    for i, (a, b) in enumerate(zip(g, w)):
        r = rtol if rtol is not None else (2e-4 if b.dtype == np.float32 else 1e-9)
        atol = r * 0.1 * max(1.0, float(np.max(np.abs(b)))) if b.size else 0.0
        if a.shape != b.shape or not np.allclose(a, b, rtol=r, atol=atol):
            err = np.max(np.abs(a.astype(np.float64) - b)) if a.shape == b.shape else "shape"
            raise AssertionError(f"{what}: output {i} differs from the reference (max err {err})")
