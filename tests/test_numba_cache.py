"""Numba's on-disk cache across processes: a kernel whose cache key changes from one process to
the next compiles again at every start (seconds, and tens of MiB of LLVM memory that a decoding
process then holds). Here rather than under tests/kernels, whose fixture runs every test twice."""

import os
import subprocess
import sys

_CACHED_RUN = """
import numpy as np
from minillm.kernels import registry
from minillm.kernels.quant import QuantWeight
w = QuantWeight.from_float(np.ones((256, 512), np.float32), "q4_1").to_groups()
small = QuantWeight.from_float(np.ones((32, 64), np.float32), "q4_1").to_groups()
lad = registry.ladder("qmatmul_forward")
for qw in (w, small):  # the parallel kernels and their serial twins
    for n in (1, 3, 20):
        x = np.ones((n, qw.shape[1]), np.float32)
        for v in (6, 7, 8):
            lad.rung(v).run(x, qw)
"""


def test_row_group_kernels_load_from_numba_cache_in_a_new_process(tmp_path):
    # v6's one-row kernel once compiled again in every process, and v8 did while its IR
    # kernels were closure variables. The second process must only load.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_DEBUG_CACHE="1")
    runs = [subprocess.run([sys.executable, "-c", _CACHED_RUN], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert "data saved" in runs[0].stdout  # the first compiled and saved (the check can fail)
    saved = [line for line in runs[1].stdout.splitlines() if "data saved" in line]
    assert not saved, f"compiled again in a new process: {saved}"
