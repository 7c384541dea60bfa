"""Numba CPU kernels. Each op module (or folder, for attention and matmul) holds the numbered
versions of its kernels (v1 the plain loop, later versions faster; the module docstring says what
each step changed and what it gained) and declares them in ``LADDERS`` (kernels/ladder.py), with
the default beside them. kernels/registry.py imports the modules named in MODULES (adding an op
is one line there) when Numba is installed and chooses the version that runs. Shared helpers: _fastmath.py (vectorisable exp/tanh/max),
_serial.py (single-threaded twins for small inputs), _microkernel.py (the GEMM register block),
_blas.py (OpenBLAS's thread count and GEMM).
"""

MODULES = ("matmul", "softmax", "crossentropy", "layernorm", "gelu", "attention", "adamw",
           "rmsnorm", "rope", "swiglu", "qmatmul", "qmatmul_q8")
