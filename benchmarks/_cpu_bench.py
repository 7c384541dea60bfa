"""Shared helpers for the CPU kernel benchmarks (bench_softmax.py ... bench_adamw.py).

A *case* is one op at one shape: how to build its inputs, the reference call, the call of a
given Numba version, and the bytes it must move at least (read inputs once, write outputs
once), from which GB/s is computed. ``run_cases`` validates each version against the reference
before timing it (a wrong kernel is never timed) and returns report rows.
Timing: the fastest of many single calls (see best_ms).
"""

import time

import numpy as np

SMALL_N, SMALL_C = 8 * 256, 384  # small config: B=8, T=256, C=384 (4C = 1536)
TINY_N, TINY_C = 12 * 64, 128  # tiny config: B=12, T=64, C=128
VOCABS = (65, 2048)  # char vocabulary, sentencepiece vocabulary


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


def run_cases(cases, all_versions=True, dtype=np.float32):
    """One row per (case, version): validated, then timed against the reference."""
    rows = []
    for case in cases:
        args = case["make"](dtype)
        ref_ms = best_ms(lambda: case["ref"](*args))
        versions = case["versions"] if all_versions else [case["default"]]
        for v in versions:
            assert_close(case["impl"](v, *case["make"](dtype)), case["ref"](*case["make"](dtype)),
                         f"{case['op']} v{v} {case['shape']}")
            ms = best_ms(lambda: case["impl"](v, *args))
            rows.append(dict(op=case["op"], version=v, shape=case["shape"], ref_ms=ref_ms, ms=ms,
                             speedup=ref_ms / ms,
                             gbs=case["nbytes"] * np.dtype(dtype).itemsize / ms / 1e6))
    return rows


def print_table(rows, title):
    print(f"\n{title}")
    print(f"{'op':24s} {'ver':>3s} {'shape':>16s} {'ref ms':>9s} {'ms':>9s} {'GB/s':>7s} "
          f"{'x ref':>7s}")
    for r in rows:
        print(f"{r['op']:24s} {r['version']:>3} {r['shape']:>16s} {r['ref_ms']:9.3f} "
              f"{r['ms']:9.3f} {r['gbs']:7.1f} {r['speedup']:6.2f}x")


def main(cases, title, argv):
    """Script entry: ``--repeat K`` reruns the sweep K times and keeps each row's fastest
    reference and kernel times (on a shared machine the neighbours' load comes and goes)."""
    k = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 1
    best = None
    for _ in range(k):
        rows = run_cases(cases, all_versions=True)
        if best is None:
            best = rows
            continue
        for b, r in zip(best, rows):
            b["ref_ms"], b["ms"] = min(b["ref_ms"], r["ref_ms"]), min(b["ms"], r["ms"])
            b["gbs"] = max(b["gbs"], r["gbs"])
            b["speedup"] = b["ref_ms"] / b["ms"]
    print_table(best, f"{title} (float32, 2 cores, best of {k} sweeps)")


def bench_one(benchmark, case, impl, dtype=np.float32):
    """pytest-benchmark body: validate the default version, then time ``impl``."""
    args = case["make"](dtype)
    v = case["default"]
    assert_close(case["impl"](v, *case["make"](dtype)), case["ref"](*case["make"](dtype)),
                 f"{case['op']} v{v} {case['shape']}")
    fn = (lambda: case["ref"](*args)) if impl == "reference" else (lambda: case["impl"](v, *args))
    fn()  # JIT warm-up outside the timed rounds
    benchmark.extra_info.update(op=case["op"], shape=case["shape"], impl=impl)
    benchmark(fn)
