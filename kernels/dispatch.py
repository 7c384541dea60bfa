"""The kernel dispatcher: one place that picks which implementation of an op runs.

Modes (``set_mode`` / env ``MINILLM_KERNELS``):
  "reference"  plain NumPy (kernels/reference.py): the readable definition, slowest.
  "numba"      the Numba CPU kernels (kernels/cpu), DEFAULT_VERSION of each op; error if
               Numba is not installed.
  "auto"       Numba where it is installed, else the reference (the default).
CuPy arrays always go to kernels/cuda (or the reference, which runs on CuPy too, for an op
that has no CUDA kernel yet).

Matmul's arithmetic stays OpenBLAS's in every CPU mode: benchmarks/bench_matmul.py shows it
well ahead of the best Numba matmul, so the ladder in kernels/cpu/matmul.py is for teaching
and benchmarking only. "reference" calls ``a @ b`` (OpenBLAS's own threads); "auto" and "numba"
call kernels/cpu/matmul_pool.py, the same single-threaded GEMM run from Numba's pool, one block
of rows per thread, so that no OpenBLAS thread spins on a core a Numba kernel needs next.

Attention runs the Numba kernels' DEFAULT_VERSION in "auto" too: v7 (every product on
minillm's own micro-kernel, one head per thread) measured fastest inside a whole training step,
ahead of v5 (BLAS tile products, Numba softmax). (Before v5 existed, "auto" kept attention on the
reference, whose batched BLAS products beat the pure-Numba flash kernel v4.)

Usage: ``get("layernorm_forward", x)(x, w, b, eps)``. Lookups are cached per (mode, device).
"""

import os

from . import reference

OPS = (
    "matmul",
    "softmax_forward", "softmax_backward",
    "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "layernorm_forward", "layernorm_backward",
    "gelu_forward", "gelu_backward",
    "bias_gelu_forward", "bias_gelu_backward",
    "attention_forward", "attention_backward",
    "adamw_step",
    "rms_norm_forward", "rms_norm_backward",
    "rope_forward", "rope_backward",
    "swiglu_forward", "swiglu_backward",
    "qmatmul_forward", "qmatmul_backward_input",
)
MODES = ("auto", "reference", "numba")

_mode = None
_tables = {}


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown kernel mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def get_mode():
    global _mode
    if _mode is None:
        _mode = _check_mode(os.environ.get("MINILLM_KERNELS", "auto").strip().lower() or "auto")
    return _mode


def set_mode(mode):
    """Choose "auto", "reference" or "numba" for every op from now on."""
    global _mode
    _mode = _check_mode(mode)
    if mode == "numba":
        _cpu_table(required=True)  # fail now, with a clear message, not at the first op


def numba_available():
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _cpu_table(required):
    if "numba" not in _tables:
        if not numba_available():
            if required:
                raise RuntimeError("kernel mode 'numba' needs the numba package (pip install numba)")
            return None
        from . import cpu
        from .cpu import matmul_pool

        _tables["numba"] = {op: getattr(cpu, op, None) for op in OPS}
        _tables["numba"]["matmul"] = matmul_pool.matmul  # (cpu.matmul is the ladder's module)
    return _tables["numba"]


def _cuda_table():
    if "cuda" not in _tables:
        from . import cuda

        _tables["cuda"] = {op: getattr(cuda, op, None) for op in OPS}
    return _tables["cuda"]


_ref_table = {op: getattr(reference, op) for op in OPS}
_resolved = {}


def get(name, like=None):
    """The implementation of op ``name`` for arrays like ``like`` under the current mode."""
    on_gpu = like is not None and type(like).__module__.startswith("cupy")
    key = (name, get_mode(), on_gpu)
    fn = _resolved.get(key)
    if fn is None:
        fn = _resolve(name, key[1], on_gpu)
        _resolved[key] = fn
    return fn


def _resolve(name, mode, on_gpu):
    if name not in _ref_table:
        raise KeyError(f"no kernel named {name!r}")
    if on_gpu:
        fn = _cuda_table().get(name)
        return fn if fn is not None else _ref_table[name]
    if mode == "reference":
        return _ref_table[name]
    table = _cpu_table(required=(mode == "numba"))
    fn = table.get(name) if table is not None else None
    return fn if fn is not None else _ref_table[name]


def clear_cache():
    _resolved.clear()


def describe():
    """One line per op: which implementation runs on the CPU under the current mode."""
    rows = []
    for op in OPS:
        fn = _resolve(op, get_mode(), False)
        rows.append(f"{op:24s} {fn.__module__}.{fn.__name__}")
    return "\n".join(rows)
