"""Serial twins of the parallel kernels, for inputs too small to pay for a second thread.

Why: a ``parallel=True`` kernel hands half its work to a worker thread and waits for it. For a
few microseconds of work the hand-off costs more than it saves, and more again when the worker
is asleep or its core is busy. Run single-threaded, the same loop needs no second core at all.

``serial(kernel)`` compiles the kernel's own Python source again without ``parallel`` (``prange``
becomes ``range``), under a different name so that Numba's on-disk cache keeps the two apart.
``pick(kernel, n)`` returns the kernel for n >= PARALLEL_MIN elements, else its serial twin.
A rung whose callable goes through ``pick`` is marked with ``picks(run)``, and
``minillm kernels`` (kernels/registry.py ``describe``) prints PARALLEL_MIN beside it. The
measurement behind the threshold is in benchmarks/README.md ("Small inputs run on one thread").
"""

import types

import numba
from numba import njit
from numba.core.caching import NullCache

# Elements of work below which a parallel kernel runs its serial twin (the one threshold).
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
        # cached on disk like the kernel ("cache" is the dispatcher's, not a target option:
        # without it every twin compiled again in each process, ~10 MiB of LLVM memory each)
        cached = not isinstance(kernel._cache, NullCache)
        twin = _twins[kernel] = njit(cache=cached, **options)(g)
    return twin


def source_tag(*modules):
    """8 hex digits of the modules' source: put in the name of a kernel that inlines LLVM IR
    from them, so that Numba's on-disk cache, which checks only the kernel's own source file,
    compiles it again when that IR changes instead of loading the old machine code."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()[:8]


def pick(kernel, n):
    """``kernel`` for n >= PARALLEL_MIN elements of work, else its serial twin."""
    if n >= PARALLEL_MIN or not kernel.targetoptions.get("parallel"):
        return kernel
    return serial(kernel)


def threads(kernel):
    """The ``nt`` argument (per-thread partial sums) for a kernel ``pick`` returned."""
    return numba.get_num_threads() if kernel.targetoptions.get("parallel") else 1


def picks(run):
    """Mark a rung's callable as choosing between a parallel kernel and its serial twin."""
    run.picks_serial = True
    return run
