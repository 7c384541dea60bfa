"""minillm.kernels: pure array functions (NumPy reference, Numba CPU, CUDA GPU), no autograd.

reference.py   the readable definition of every kernel, forward and backward
ladder.py      the ladder protocol: how an op module declares its numbered versions (LADDERS)
registry.py    the one place that chooses which version runs (``get``, ``describe``)
cpu/, cuda/    the op modules

Importing this package imports neither numba nor cupy: the registry loads ``kernels.cpu`` and
``kernels.cuda`` modules on first use.
"""

from . import reference, registry
from .registry import describe

__all__ = ["describe", "reference", "registry"]
