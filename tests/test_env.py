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
