"""Do Numba's thread pool and OpenBLAS's thread pool fight? A mixed MLP-block benchmark.

One step = the small config's MLP: h = x @ W1 (2048x384 @ 384x1536, OpenBLAS), bias_gelu(h, b)
(Numba), h @ W2 (2048x1536 @ 1536x384, OpenBLAS), layernorm (Numba), then the same again:
BLAS and Numba alternate, as in training. If either pool busy-waits after its call, it steals
the 2 cores from the other. We time each op alone (in a loop of its own) and the mixed step;
ratio = mixed / sum of the parts, 1.0 means no interference.

Each setting runs in a fresh subprocess (the variables must be set before numba/numpy load);
settings are interleaved over ``--rounds`` rounds and the median is reported, because the
machine is shared. Usage: ``python benchmarks/mixed_threads.py [--rounds 3]``.
"""

import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "default (omp layer)": {},
    "NUMBA_THREADING_LAYER=workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "NUMBA_THREADING_LAYER=tbb": {"NUMBA_THREADING_LAYER": "tbb"},
    "OMP_WAIT_POLICY=passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
    "NUMBA_NUM_THREADS=1": {"NUMBA_NUM_THREADS": "1"},
}


def child(seconds=1.0):
    import numba
    import numpy as np

    from minillm.kernels import registry

    bias_gelu_forward, layernorm_forward = (
        registry.ladder(op).rung(registry.ladder(op).default).run
        for op in ("bias_gelu_forward", "layernorm_forward"))

    rng = np.random.default_rng(0)
    N, C = 2048, 384
    x = rng.standard_normal((N, C)).astype(np.float32)
    W1 = (0.05 * rng.standard_normal((C, 4 * C))).astype(np.float32)
    W2 = (0.05 * rng.standard_normal((4 * C, C))).astype(np.float32)
    b1 = np.zeros(4 * C, np.float32)
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    h = x @ W1
    a = bias_gelu_forward(h, b1)
    o = a @ W2
    ops = {
        "matmul1": lambda: x @ W1,
        "bias_gelu": lambda: bias_gelu_forward(h, b1),
        "matmul2": lambda: a @ W2,
        "layernorm": lambda: layernorm_forward(o, w, b, 1e-5),
    }

    def mixed():
        y = x
        for _ in range(2):
            y = layernorm_forward(bias_gelu_forward(y @ W1, b1) @ W2, w, b, 1e-5)[0]

    def per_call(fn):
        for _ in range(3):
            fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        return (time.perf_counter() - t0) / n * 1e3

    parts = {k: per_call(f) for k, f in ops.items()}
    mixed_ms = per_call(mixed)
    parts_ms = 2 * sum(parts.values())
    print(json.dumps(dict(layer=numba.threading_layer(), threads=numba.get_num_threads(),
                          parts=parts, parts_ms=parts_ms, mixed_ms=mixed_ms)))


def main(rounds=3):
    results = {k: [] for k in SETTINGS}
    for _ in range(rounds):
        for name, env in SETTINGS.items():
            p = subprocess.run([sys.executable, __file__, "--child"], capture_output=True,
                               text=True, env={**os.environ, **env})
            if p.returncode != 0:
                results[name].append(None)
                continue
            results[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"{'setting':34s} {'layer':>9s} {'parts ms':>9s} {'mixed ms':>9s} {'ratio':>6s}")
    for name, rs in results.items():
        rs = [r for r in rs if r is not None]
        if not rs:
            print(f"{name:34s} {'(not available)':>9s}")
            continue
        rs.sort(key=lambda r: r["mixed_ms"])
        r = rs[len(rs) // 2]  # median round
        print(f"{name:34s} {r['layer']:>9s} {r['parts_ms']:9.2f} {r['mixed_ms']:9.2f} "
              f"{r['mixed_ms'] / r['parts_ms']:6.2f}   parts: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["parts"].items()))


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        main(int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3)
