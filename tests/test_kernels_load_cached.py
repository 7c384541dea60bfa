"""Numba's on-disk cache across processes: a kernel whose cache key changes from one process to
the next, or that is not cached at all, compiles again at every start (seconds, and about ten
MiB of LLVM memory that a decoding process then holds). Here rather than under tests/kernels,
whose fixture runs every test twice."""

import os
import subprocess
import sys

# A small quantized Llama's prompt and decode steps (the parallel kernels and, for the small
# products, their serial twins), then quantized products of every row-group rung; prints each
# of minillm's kernels that this process compiled instead of loading.
_RUN = """
import gc
import numpy as np
from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher
from minillm import backend
from minillm.autograd import no_grad
from minillm.kernels import registry
from minillm.kernels.quant import QuantWeight
from minillm.models.llama import Llama, LlamaConfig
from minillm.nn.quant import quantize_linears

backend.manual_seed(0)
model = Llama(LlamaConfig(vocab_size=96, block_size=128, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=64, intermediate_size=128)).eval()
quantize_linears(model, "q4_1")
with no_grad():
    cache = model.new_kv_cache(1, max_len=80)
    model(np.arange(40)[None] % 96, kv_cache=cache, last_only=True)
    for t in range(3):
        model(np.asarray([[t]]), kv_cache=cache, last_only=True)
lad = registry.ladder("qmatmul_forward")
for shape in ((256, 512), (32, 64)):
    qw = QuantWeight.from_float(np.ones(shape, np.float32), "q4_1").to_groups()
    for n in (1, 3, 20):
        for v in (6, 7, 8):
            lad.rung(v).run(np.ones((n, shape[1]), np.float32), qw)
for d in gc.get_objects():
    if (isinstance(d, CPUDispatcher) and d.signatures
            and d.py_func.__module__.startswith(("kernels", "minillm"))):
        if isinstance(d._cache, NullCache) or d.stats.cache_misses:
            print("COMPILED", d.py_func.__module__, d.py_func.__qualname__)
"""


def test_kernels_load_from_numba_cache_in_a_new_process(tmp_path):
    # v6's one-row kernel once compiled again in every process, v8 did while its IR kernels
    # were closure variables, and every serial twin was not cached at all. The first process
    # compiles; the second must only load.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", _RUN], env=env, capture_output=True,
                           text=True, timeout=900) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    first = [line for line in runs[0].stdout.splitlines() if line.startswith("COMPILED")]
    again = [line for line in runs[1].stdout.splitlines() if line.startswith("COMPILED")]
    assert any("_serial" in line for line in first) and any("v8" in line for line in first)
    assert not again, "compiled again in a new process:\n" + "\n".join(again)
