"""Serial twins of the parallel kernels, for inputs too small to pay for a second thread.

Why: a ``parallel=True`` kernel hands half its work to a worker thread and waits for it. For a
few microseconds of work the hand-off costs more than it saves, and more again when the worker
is asleep (waking a thread on an idle core of this VM took 0.3-0.8 ms) or when its core is
held by another thread (OpenBLAS's worker spins 0.1 s after each multi-threaded call, which is
why matmuls now run from Numba's pool, kernels/cpu/matmul_pool.py). Run single-threaded, the
same loop needs no second core at all.

``serial(kernel)`` compiles the kernel's own Python source again without ``parallel`` (``prange``
becomes ``range``), under a different name so that Numba's on-disk cache keeps the two apart.
``pick(kernel, n)`` returns the kernel for n >= PARALLEL_MIN elements, else its serial twin.
"""

import types

import numba
from numba import njit

# Elements below which one thread wins inside a training step. With the OpenMP threading layer
# and matmuls on Numba's pool (minillm/_env.py, matmul_pool.py) the tiny config's kernels
# (98K-393K elements) pay for their second thread: tiny step (median of 40, ms) 50-56 at 2**16
# and 52-53 at 0 against 57-78 at 2**19, attention 8-9 ms a step against 13-19. (With the
# workqueue layer and OpenBLAS's spinning worker, 2**19 had won: 67.2 always parallel, 59.9.)
PARALLEL_MIN = 1 << 16

_twins = {}


def serial(kernel):
    """The kernel compiled without parallel=True (cached, one per kernel)."""
    twin = _twins.get(kernel)
    if twin is None:
        f = kernel.py_func
        g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial",
                               f.__defaults__, f.__closure__)
        g.__qualname__ = f.__qualname__ + "_serial"  # its own cache file
        options = {k: v for k, v in kernel.targetoptions.items()
                   if k not in ("parallel", "nopython")}  # njit implies nopython
        twin = _twins[kernel] = njit(**options)(g)
    return twin


def pick(kernel, n):
    """``kernel`` for n >= PARALLEL_MIN elements of work, else its serial twin."""
    if n >= PARALLEL_MIN or not kernel.targetoptions.get("parallel"):
        return kernel
    return serial(kernel)


def threads(kernel):
    """The ``nt`` argument (per-thread partial sums) for a kernel ``pick`` returned."""
    return numba.get_num_threads() if kernel.targetoptions.get("parallel") else 1
