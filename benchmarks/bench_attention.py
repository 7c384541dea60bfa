"""Fused causal attention: kernels/cpu/attention.py versions vs the NumPy reference.

Script: ``python benchmarks/bench_attention.py [--versions 3,4]`` prints one row per
(config, version, direction). Suite: ``pytest benchmarks/bench_attention.py --benchmark-enable``.
Each version is checked against the reference before it is timed; warm-up calls keep the JIT
compile out of the timings; a time is the fastest of many single calls (the machine is shared
and has 2 cores: the fastest call measures the code, an average measures the neighbours).

FLOPs (causal, P = T (T + 1) / 2 visible query-key pairs per head, exp not counted):
forward 4 B H P D (s = q k^T and o = p v, 2 FLOPs per multiply-add), backward 10 B H P D
(s recomputed, dp = do v^T, dv = p^T do, dq = ds k, dk = ds^T q). The reference computes the
full T x T products, twice the work; GFLOP/s here is useful work per second.
"""

import sys

import minillm  # noqa: F401  (first: minillm/_env.py's settings apply only before NumPy loads)
import numpy as np
import pytest

from _cpu_bench import best_ms as _best_ms
from minillm.kernels import reference as R
from minillm.kernels.cpu import attention as A

CONFIGS = {"tiny": (12, 4, 64, 32), "small": (8, 6, 256, 64)}  # B, H, T, D (Shakespeare configs)


def make(config, dtype=np.float32):
    B, H, T, D = CONFIGS[config]
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((B, H, T, D)).astype(dtype) for _ in range(4))
    scale = 1.0 / D**0.5
    o, lse = R.attention_forward(q, k, v, scale)
    return q, k, v, do, o, lse, scale


def flops(config, direction):
    B, H, T, D = CONFIGS[config]
    return (4 if direction == "forward" else 10) * B * H * (T * (T + 1) // 2) * D


def calls(config, version):
    """(reference, version) callables for the forward and the backward, already validated."""
    q, k, v, do, o, lse, scale = make(config)
    ref = {"forward": lambda: R.attention_forward(q, k, v, scale),
           "backward": lambda: R.attention_backward(do, q, k, v, o, lse, scale)}
    impl = {"forward": lambda: A.attention_forward_version(version, q, k, v, scale),
            "backward": lambda: A.attention_backward_version(version, do, q, k, v, o, lse, scale)}
    for d in ("forward", "backward"):  # validate (and compile) before any timing
        for got, want in zip(impl[d](), ref[d]()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    return ref, impl


def best_ms(fn):
    return _best_ms(fn, min_time=0.3, min_calls=10)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("version", sorted(A.FORWARD))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_attention(benchmark, config, version, direction):
    _, impl = calls(config, version)
    impl[direction]()  # warm-up
    benchmark(impl[direction])


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_attention_reference(benchmark, config, direction):
    ref, _ = calls(config, A.DEFAULT_VERSION)
    benchmark(ref[direction])


def rows(all_versions=False):
    """report.py rows: forward, backward and both, DEFAULT_VERSION (or every version) vs the
    reference; gbs carries GFLOP/s of useful work here (attention is compute-bound)."""
    out = []
    for config in CONFIGS:
        shape = "B%d H%d T%d D%d" % CONFIGS[config]
        for version in (sorted(A.FORWARD) if all_versions else [A.DEFAULT_VERSION]):
            ref, impl = calls(config, version)
            r = {d: best_ms(ref[d]) for d in ref}
            m = {d: best_ms(impl[d]) for d in impl}
            for d, f in (("forward", flops(config, "forward")),
                         ("backward", flops(config, "backward"))):
                out.append(dict(op=f"attention_{d}", version=version, shape=shape, ref_ms=r[d],
                                ms=m[d], speedup=r[d] / m[d], gbs=f / m[d] / 1e6))
            both_ref, both = sum(r.values()), sum(m.values())
            out.append(dict(op="attention_fwd+bwd", version=version, shape=shape, ref_ms=both_ref,
                            ms=both, speedup=both_ref / both,
                            gbs=(flops(config, "forward") + flops(config, "backward")) / both / 1e6))
    return out


def main(argv):
    versions = sorted(A.FORWARD)
    if "--versions" in argv:
        versions = [int(x) for x in argv[argv.index("--versions") + 1].split(",")]
    print(f"{'config':6s} {'dir':8s} {'version':9s} {'ms':>8s} {'GFLOP/s':>8s} {'vs ref':>7s}")
    for config in CONFIGS:
        total = {}
        ref_ms = {}
        for version in versions:
            ref, impl = calls(config, version)
            for d in ("forward", "backward"):
                if d not in ref_ms:
                    ref_ms[d] = best_ms(ref[d])
                    print(f"{config:6s} {d:8s} {'reference':9s} {ref_ms[d]:8.2f} "
                          f"{flops(config, d) / ref_ms[d] / 1e6:8.1f} {1.0:6.1f}x")
                ms = best_ms(impl[d])
                total[version] = total.get(version, 0.0) + ms
                print(f"{config:6s} {d:8s} {'v%d' % version:9s} {ms:8.2f} "
                      f"{flops(config, d) / ms / 1e6:8.1f} {ref_ms[d] / ms:6.1f}x")
        ref_total = ref_ms["forward"] + ref_ms["backward"]
        for version in versions:
            print(f"{config:6s} {'fwd+bwd':8s} {'v%d' % version:9s} {total[version]:8.2f} "
                  f"{'':8s} {ref_total / total[version]:6.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
