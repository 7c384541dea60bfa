"""minillm.kernels: pure array functions (NumPy reference, Numba CPU, CUDA GPU), no autograd.

Importing this package imports neither numba nor cupy: ``kernels.cpu`` and ``kernels.cuda`` are
loaded by the dispatcher on first use.
"""

from . import dispatch, reference

__all__ = ["dispatch", "reference"]
