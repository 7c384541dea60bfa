"""The BLAS's own thread count, read and set at run time (the job threadpoolctl does, for the
OpenBLAS that NumPy wheels bundle; numpy and numba have no API for it).

Why: the BLAS calls made from Numba's thread pool (matmul v6, kernels/cpu/matmul/pool.py) and
next to Numba kernels (attention v5) run single-threaded, so that OpenBLAS's own worker threads
never compete for the cores Numba's threads use. ``library()`` also hands matmul v6 the loaded
OpenBLAS, whose GEMM it calls directly.

Found by the library's path in /proc/self/maps (Linux) and its exported names: NumPy 2's
scipy-openblas spells them ``scipy_openblas_set_num_threads64_``, a plain OpenBLAS
``openblas_set_num_threads``. Where none is found (another BLAS, another OS) ``available()`` is
False and ``single_threaded()`` does nothing.
"""

import ctypes
import threading
from contextlib import contextmanager

_NAMES = [(f"{p}_set_num_threads{s}", f"{p}_get_num_threads{s}")
          for p in ("scipy_openblas", "openblas") for s in ("64_", "")]
_lock = threading.Lock()
_found = None  # (set, get) or () when there is none


def _find():
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return ()
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter, lib
    return ()


def _functions():
    global _found
    if _found is None:
        import numpy  # noqa: F401  (its OpenBLAS must be loaded to be found)

        _found = _find()
    return _found


def library():
    """The loaded OpenBLAS as a ctypes.CDLL, or None (kernels/cpu/matmul/pool.py calls its GEMM)."""
    f = _functions()
    return f[2] if f else None


def available():
    return bool(_functions())


def num_threads():
    """Threads the BLAS uses per call (1 where it cannot be asked)."""
    f = _functions()
    return f[1]() if f else 1


@contextmanager
def single_threaded():
    """The BLAS runs each call on the calling thread inside the block (process-wide: a matmul
    another Python thread makes meanwhile is single-threaded too)."""
    f = _functions()
    if not f:
        yield
        return
    with _lock:
        before = f[1]()
        f[0](1)
        try:
            yield
        finally:
            f[0](before)
