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


# OpenBLAS's worker threads after a minillm matmul. A multi-threaded OpenBLAS call wakes its
# workers, which then spin for the next call (about 0.1 s, without yielding) on a core a Numba
# kernel needs; minillm's matmul runs OpenBLAS single-threaded inside Numba's pool
# (kernels/cpu/matmul/pool.py), so OpenBLAS's workers never run. The check counts how often
# each worker was put on a CPU (the third field of /proc/self/task/<tid>/schedstat), read once
# the workers sleep: a sleeping thread's count does not move. The workers are the threads that
# ``import minillm`` starts (NumPy loads OpenBLAS, which starts them; Numba's pool starts only
# with the first kernel). Prints the kernel mode, the number of workers and their counts:
# asleep, after three minillm matmuls and a linear layer, asleep again, after three NumPy
# matmuls (the control: the counts move when the workers run).
_WAKEUPS = """
import os, time
def tasks():
    return {int(t) for t in os.listdir("/proc/self/task")}
def scheduled(tid):
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[2])
before = tasks()
import numpy as np
import minillm as M
import minillm.functional as F
workers = sorted(tasks() - before)
def asleep(tid):  # state S: waiting on a condition variable (a spinning thread is R)
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"
def settled():  # a freshly used worker spins a while before it sleeps
    counts = None
    for _ in range(100):
        now = [scheduled(t) for t in workers]
        if now == counts and all(asleep(t) for t in workers):
            return now
        counts = now
        time.sleep(0.2)
    raise SystemExit("OpenBLAS's workers never went to sleep")
a = np.ones((600, 600), np.float32)
x, w = M.Tensor(np.ones((2, 300, 600), np.float32)), M.Tensor(a)
quiet = settled()
for _ in range(3):
    M.Tensor(a) @ M.Tensor(a)
F.linear(x, w)
after_minillm = [scheduled(t) for t in workers]
quiet_again = settled()
for _ in range(3):
    a @ a
print(M.get_kernels(), len(workers), *quiet, *after_minillm, *quiet_again,
      *[scheduled(t) for t in workers])
"""


def _openblas_in_numpy():
    code = "import numpy; print(open('/proc/self/maps').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return "openblas" in out.stdout.lower()


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="Linux /proc schedstat")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no worker on one core")
def test_openblas_workers_stay_asleep_during_a_minillm_matmul():
    if not _openblas_in_numpy():
        pytest.skip("NumPy is not linked against OpenBLAS")
    names = ("MINILLM_KERNELS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in names}
    out = subprocess.run([sys.executable, "-c", _WAKEUPS], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    mode, n = out[0], int(out[1])
    assert mode == "auto", out
    if n == 0:
        pytest.skip("this OpenBLAS starts no worker thread when it loads")
    quiet, after_minillm, quiet_again, after_numpy = (
        [int(c) for c in out[2 + i * n: 2 + (i + 1) * n]] for i in range(4))
    assert after_minillm == quiet, "an OpenBLAS worker ran during minillm's matmul"
    assert any(b > a for a, b in zip(quiet_again, after_numpy)), "the control saw no worker run"
