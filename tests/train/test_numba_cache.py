"""The same numbers whether a Numba kernel was compiled in this process or loaded from the
on-disk cache (issue: a run resumed with a warm cache drifted from the uninterrupted run).

Two subprocesses share a fresh NUMBA_CACHE_DIR: the first compiles every kernel, the second
loads them. Found: kernels compiled with ``fastmath=True`` (all seven LLVM flags, ``fast``)
and ``parallel=True`` differ by up to a few ulps (gelu_backward v2/v3 up to 8.7e-7), because
with both ``reassoc`` and ``contract`` LLVM's second optimisation of the parallel loop body,
after it is linked into the caller's library (the copy the cache stores), fuses multiply-adds
differently than the body that runs in the compiling process. Any kernel whose flags leave out
either ``reassoc`` or ``contract`` gives bit-identical results (checked for gelu v2/v3 forward
and backward). The fix belongs in kernels/cpu (its fastmath flags); until then this test fails.
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
x = rng.standard_normal(3 * 4 * 64 * 512 + 7).astype(np.float32)
dy = rng.standard_normal(x.shape).astype(np.float32)
q, k, v = (rng.standard_normal((3, 4, 64, 32)).astype(np.float32) for _ in range(3))
out = {"gelu_backward": gelu.gelu_backward(dy, x), "gelu_forward": gelu.gelu_forward(x),
       "attention_forward": attention.attention_forward(q, k, v, 32 ** -0.5)[0]}
np.savez(sys.argv[1], **out)
'''


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="kernels/cpu compile with fastmath=True (reassoc + contract)")
def test_kernels_compiled_in_process_equal_kernels_from_the_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    for name in ("compiled", "cached"):
        subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{name}.npz")], env=env,
                       check=True, timeout=900)
    a, b = np.load(tmp_path / "compiled.npz"), np.load(tmp_path / "cached.npz")
    differ = {k: float(np.abs(a[k] - b[k]).max()) for k in a if not np.array_equal(a[k], b[k])}
    assert differ == {}, differ
