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
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_openblas_thread_timeout_is_a_default_the_user_can_override():
    show = "import os, minillm; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', '-'), " \
           "'OPENBLAS_THREAD_TIMEOUT' in minillm._env.ADDED)"
    assert _run(show) == ["4", "True"]
    assert _run(show, OPENBLAS_THREAD_TIMEOUT="20") == ["20", "False"]
    # NumPy already loaded OpenBLAS: setting the variable would change nothing, so it is left alone
    assert _run("import numpy; " + show) == ["-", "False"]


# CPU seconds the process burns while its main thread sleeps for 0.3 s right after a matmul on
# every core: OpenBLAS's idle workers spinning for the next call.
_SPIN = """
import os, time
import minillm
import numpy as np
a = np.ones((600, 600), np.float32)
spun = []
for _ in range(3):
    a @ a
    t = os.times()
    time.sleep(0.3)
    u = os.times()
    spun.append(u.user + u.system - t.user - t.system)
print(min(spun))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS spins only with worker threads")
def test_openblas_workers_sleep_after_a_matmul_instead_of_spinning():
    ours = float(_run(_SPIN)[0])
    default = float(_run(_SPIN, OPENBLAS_THREAD_TIMEOUT="28")[0])  # OpenBLAS's own default
    # 2^28 cycles is about 0.1 s of a spinning core at 2-4 GHz; 2^4 cycles is nothing
    assert default > 0.04, default
    assert ours < 0.02, ours
