"""Process-wide settings made when minillm is imported (minillm/_env.py)."""

import os
import subprocess
import sys

import pytest

# Forty 1 MiB buffers allocated, written and freed, six times over: the pattern of a training
# step's activations. Prints the page faults of each round.
_ROUNDS = """
import resource
import numpy as np
import minillm
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    bufs = [np.ones(1 << 18, np.float32) for _ in range(40)]
    del bufs
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _faults(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MINILLM_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                          "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _ROUNDS], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return [int(n) for n in out.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_buffers_are_reused_not_faulted_in_again():
    kept = _faults()
    default = _faults(MINILLM_MALLOC="default")
    # 40 MiB is about 10,000 pages: glibc's defaults return them to the kernel every round;
    # with minillm's thresholds only the first round touches new pages.
    assert min(default[1:]) > 5000, default
    assert max(kept[1:]) < 500, kept


def _run(code, **env):
    names = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
    clean = {k: v for k, v in os.environ.items() if k not in names}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


_LAYER = """
import numpy as np
import minillm
from minillm.kernels import registry
from minillm.kernels.cpu import _serial
import numba
_serial.PARALLEL_MIN = 0  # run the parallel kernel, which starts the threading layer
x = np.ones((300, 7), np.float32)
lad = registry.ladder("layernorm_forward")
lad.rung(lad.default).run(x, np.ones(7, np.float32), np.zeros(7, np.float32), 1e-5)
print(numba.threading_layer(), "NUMBA_THREADING_LAYER_PRIORITY" in minillm._env.ADDED)
"""


def test_numba_prefers_openmp_unless_the_user_chose_a_layer():
    code = _LAYER
    layer, added = _run(code)
    assert added == "True"
    assert layer in ("omp", "tbb", "workqueue")  # the first of the priority list this machine has
    if _has_libgomp():
        assert layer == "omp"
    assert _run(code, NUMBA_THREADING_LAYER="workqueue") == ["workqueue", "False"]


def _has_libgomp():
    import ctypes.util

    return ctypes.util.find_library("gomp") is not None


# CPU seconds the process burns while its main thread sleeps for 0.3 s right after a big matmul:
# idle worker threads spinning for the next call. OpenBLAS's own workers spin for 2^28 cycles
# (about 0.1 s) without yielding; minillm's matmul runs OpenBLAS single-threaded from Numba's
# pool, whose OpenMP threads spin well under a millisecond before they sleep.
_SPIN = """
import os, sys, time
import minillm
import numpy as np
from minillm.kernels.cpu.matmul import pool
a = np.ones((600, 600), np.float32)
mm = pool.matmul if sys.argv[1] == "minillm" else np.matmul
spun = []
for _ in range(3):
    mm(a, a)
    t = os.times()
    time.sleep(0.3)
    u = os.times()
    spun.append(u.user + u.system - t.user - t.system)
print(min(spun))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="nothing spins with one core")
def test_no_thread_spins_after_a_minillm_matmul():
    def spun(which):
        out = subprocess.run([sys.executable, "-c", _SPIN, which], capture_output=True,
                             text=True, check=True)
        return float(out.stdout)

    assert spun("numpy") > 0.04  # OpenBLAS's worker, the control: the test can see a spinner
    assert spun("minillm") < 0.02
