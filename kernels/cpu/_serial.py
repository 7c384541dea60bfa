"""Serial twins of the parallel kernels, for inputs too small to pay for a second thread.

Why: a ``parallel=True`` kernel hands half its rows to a worker thread and waits for it. On two
cores the other core is often still held by an OpenBLAS thread spinning after the matmul that
ran just before, so the worker starts late and a 60 us layer norm at the tiny config (768 x 128)
took 100-300 us more inside a training step than alone. Run single-threaded, the same loop
needs no second core at all.

``serial(kernel)`` compiles the kernel's own Python source again without ``parallel`` (``prange``
becomes ``range``), under a different name so that Numba's on-disk cache keeps the two apart.
``pick(kernel, n)`` returns the kernel for n >= PARALLEL_MIN elements, else its serial twin.
"""

import types

import numba
from numba import njit

# Elements below which one thread wins inside a training step: the tiny config's activations
# (98K-393K elements) run serially, the small config's (786K and up) in parallel. Measured in one
# process, five interleaved rounds of 20 steps (median ms/step), tiny config: always parallel
# 67.2, serial below 2**19 59.9, below 2**21 58.1; small config: no difference above the noise.
PARALLEL_MIN = 1 << 19

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
