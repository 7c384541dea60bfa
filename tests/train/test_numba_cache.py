"""The same numbers whether a Numba kernel was compiled in this process or loaded from the
on-disk cache (issue: a run resumed with a warm cache drifted from the uninterrupted run).

Two subprocesses share a fresh NUMBA_CACHE_DIR: the first compiles every kernel, the second
loads them. Found: kernels compiled with ``fastmath=True`` (all seven LLVM flags, ``fast``)
and ``parallel=True`` differ by up to a few ulps (gelu_backward v2/v3 up to 8.7e-7), because
with both ``reassoc`` and ``contract`` LLVM's second optimisation of the parallel loop body,
after it is linked into the caller's library (the copy the cache stores), fuses multiply-adds
differently than the body that runs in the compiling process. Any kernel whose flags leave out
either ``reassoc`` or ``contract`` gives bit-identical results, so every kernel in kernels/cpu
compiles with ``_fastmath.FASTMATH`` (fastmath=True less ``contract``).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r'''
import sys
import numpy as np
from kernels.cpu import attention, gelu
rng = np.random.default_rng(0)
x = rng.standard_normal(3 * 4 * 64 * 512 + 7).astype(np.float32)  # (M,): the parallel path
dy = rng.standard_normal(x.shape).astype(np.float32)
q, k, v = (rng.standard_normal((3, 4, 64, 32)).astype(np.float32) for _ in range(3))
out = {}
for n in (2, 3):  # the parallel versions, called directly (the same names in every layout)
    dx, y = np.empty_like(x), np.empty_like(x)
    getattr(gelu, f"gelu_backward_v{n}")(dx, dy, x)
    getattr(gelu, f"gelu_forward_v{n}")(y, x)
    out[f"gelu_backward_v{n}"], out[f"gelu_forward_v{n}"] = dx, y
o, lse = np.empty_like(q), np.empty(q.shape[:3], np.float32)
attention.attention_forward_v2(o, lse, q, k, v, np.float32(32 ** -0.5), True)
out["attention_forward_v2"] = o
np.savez(sys.argv[1], **out)
'''


@pytest.mark.slow
def test_kernels_compiled_in_process_equal_kernels_from_the_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    for name in ("compiled", "cached"):
        p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{name}.npz")], env=env,
                           capture_output=True, text=True, timeout=900)
        if p.returncode:  # a failure to run is not the failure this test expects
            pytest.fail(f"the kernel script failed: {p.stderr[-2000:]}", pytrace=False)
    a, b = np.load(tmp_path / "compiled.npz"), np.load(tmp_path / "cached.npz")
    differ = {k: float(np.abs(a[k] - b[k]).max()) for k in a if not np.array_equal(a[k], b[k])}
    assert differ == {}, differ
