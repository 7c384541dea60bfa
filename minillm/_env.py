"""Process-wide settings that must be made before NumPy or Numba load (imported first by
``minillm/__init__.py``; imports nothing but the stdlib). Each one only fills in a variable the
user has not set, so any of them can be overridden from the environment.

- NUMBA_THREADING_LAYER=workqueue. On a 2-core machine Numba's OpenMP pool spins while
  OpenBLAS's threads run the matmuls (and the other way round); measured in
  benchmarks/README.md, a layer-norm forward between matmuls took 7.9 ms on the OpenMP layer and
  0.29 ms on workqueue. Workqueue's one limit: two Python threads must not launch parallel
  kernels at the same time.
- OPENBLAS_CORETYPE=SkylakeX, only on CPUs with the AVX-512 subsets SkylakeX kernels use
  (F, BW, DQ, VL) where OpenBLAS's own detection would pick the AVX2 (Haswell) kernels: AMD
  Zen 4/5. Measured there: float32 matmul about 1.7x faster (400 vs 220 GFLOP/s on 2 cores).
  On Intel CPUs with AVX-512 OpenBLAS already picks SkylakeX and nothing is changed. Only
  effective when NumPy has not been imported yet.
"""

import os
import sys


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read(65536)
    except OSError:
        return "", set()
    vendor, flags = "", set()
    for line in text.splitlines():
        if line.startswith("vendor_id") and not vendor:
            vendor = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if vendor and flags:
            break
    return vendor, flags


def configure():
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    if "OPENBLAS_CORETYPE" not in os.environ and "numpy" not in sys.modules:
        vendor, flags = _cpu_flags()
        if vendor == "AuthenticAMD" and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


configure()
