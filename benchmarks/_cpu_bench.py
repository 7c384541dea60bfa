"""Shared helpers of the kernel benchmarks (bench_kernels.py): timing, validation, bandwidth.

``best_ms`` times the fastest of many single calls; ``assert_close`` compares a kernel's outputs
with the reference's, so that a wrong kernel is never timed; ``read_bandwidth_gbs`` measures how
fast all cores together read memory, the bound of a product that reads each weight once.
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


_read_all = None


def _sum_kernel():
    """A parallel Numba sum that reads a float32 array once, each thread its own contiguous
    part: a STREAM-like read (compiled on first use, so importing this needs no Numba)."""
    global _read_all
    if _read_all is None:
        from numba import njit, prange

        @njit(parallel=True, fastmath=True)  # nested: not cached on disk, compiled once a run
        def read_all(a):
            nt = 64  # parts, more than threads, so a descheduled thread holds back little
            part = np.zeros(nt)
            n = a.size
            for c in prange(nt):
                s = 0.0
                for i in range(c * n // nt, (c + 1) * n // nt):
                    s += a[i]
                part[c] = s
            return part.sum()

        _read_all = read_all
    return _read_all


def read_bandwidth_gbs(mib=512):
    """GB/s of a parallel read of ``mib`` MiB (larger than the caches for the default)."""
    a = np.ones(mib * (1 << 20) // 4, dtype=np.float32)
    read_all = _sum_kernel()
    return a.nbytes / best_ms(lambda: read_all(a), min_calls=5) / 1e6
