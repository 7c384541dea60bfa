"""Process-wide settings that must be made before NumPy or Numba load (imported first by
``minillm/__init__.py``; imports nothing but the stdlib). Each one only fills in a variable the
user has not set, so any of them can be overridden from the environment.

- NUMBA_THREADING_LAYER_PRIORITY="omp tbb workqueue": Numba's OpenMP pool where libgomp is
  there. Its idle threads spin briefly (GNU OpenMP: about 300,000 polls) and then sleep, so the
  next kernel starts at once, and nothing else spins in a training step: matmuls run from
  the same pool (kernels/cpu/matmul/pool.py: OpenBLAS single-threaded inside each call, one
  block of rows per Numba thread), so OpenBLAS's own worker, which spins about 0.1 s after
  every call without yielding, never starts. Workqueue threads sleep at once, and every
  kernel launch then pays for waking them (a slower training step on workqueue:
  benchmarks/README.md, "One thread pool"). A user's NUMBA_THREADING_LAYER (or priority)
  wins. One limit of GNU OpenMP: a process that forks (multiprocessing's "fork" start method)
  after running parallel kernels cannot run them in the child; use the "spawn" start method
  there, or NUMBA_THREADING_LAYER=workqueue.
- OPENBLAS_CORETYPE=SkylakeX, only on CPUs with the AVX-512 subsets SkylakeX kernels use
  (F, BW, DQ, VL) where OpenBLAS's own detection would pick the AVX2 (Haswell) kernels: AMD
  Zen 4/5, where the SkylakeX kernels run float32 matmul faster (benchmarks/README.md,
  "OpenBLAS's kernels on AMD AVX-512"). On Intel CPUs with AVX-512 OpenBLAS already picks
  SkylakeX and nothing is changed. Only effective when NumPy has not been imported yet.
- glibc malloc keeps freed blocks of up to 32 MiB for reuse (mallopt M_MMAP_THRESHOLD 32 MiB,
  M_TRIM_THRESHOLD 1 GiB). Every training step allocates and frees the same activation and
  gradient buffers; with glibc's adaptive defaults many of them go back to the kernel and the
  next step faults them in again, page by page (page faults and system time per step:
  benchmarks/README.md, "Page faults"; tests/test_env.py checks the reuse). Skipped where the
  user set MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES, or
  MINILLM_MALLOC=default, and off glibc. Blocks above 32 MiB (glibc's limit) are still
  returned.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h


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


def keep_freed_memory():
    """Tell glibc malloc to reuse freed buffers instead of returning them; True if it did."""
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    if os.environ.get("MINILLM_MALLOC") == "default" or any(n in os.environ for n in names):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
        # Setting both fixes the thresholds (glibc otherwise adapts them, and trims).
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def _default(name, value):
    if name not in os.environ:
        os.environ[name] = value
        ADDED.append(name)


def configure():
    if "NUMBA_THREADING_LAYER" not in os.environ:
        _default("NUMBA_THREADING_LAYER_PRIORITY", "omp tbb workqueue")
    if "numpy" not in sys.modules:  # OpenBLAS reads its variables once, when NumPy loads it
        vendor, flags = _cpu_flags()
        if vendor == "AuthenticAMD" and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            _default("OPENBLAS_CORETYPE", "SkylakeX")
    global MALLOC_TUNED
    MALLOC_TUNED = keep_freed_memory()


ADDED = []  # the variables configure() set (benchmarks start PyTorch's process without them)
MALLOC_TUNED = False  # whether configure() set the malloc thresholds
configure()
