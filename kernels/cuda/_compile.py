"""Compile-once cache of the CUDA sources in this folder, and the launch helpers.

A ``.cu`` file here is a template: its block sizes and switches are ``#define`` placeholders
that it does not set itself (each file checks them with ``#error``). ``render(file, defines)``
puts one ``#define NAME VALUE`` line per placeholder in front of the source, and ``module``
hands that text to ``cupy.RawModule`` (NVRTC), once per (file, defines, arch, options); the
compile-check test (tests/kernels/test_cuda_compile.py) runs nvcc on exactly the same text, so
what CI compiles is what a GPU machine loads.

cupy is imported inside the functions that need it: importing this module (and the package)
costs nothing on a machine without CuPy.
"""

import functools
from pathlib import Path

import numpy as np

CU_DIR = Path(__file__).resolve().parent
STD = "-std=c++17"
# --use_fast_math is left out on purpose: it turns expf/tanhf/division into the approximate
# instructions, and the FP32 kernels are tested to ~1e-5 against the reference. The kernels
# that want the fast exp2 (flash attention) ask for it explicitly with exp2f/__expf.
NVRTC_OPTIONS = (STD,)


def ceil_div(a, b):
    return (int(a) + int(b) - 1) // int(b)


def source(filename):
    return (CU_DIR / filename).read_text()


def render(filename, defines=None):
    """The text NVRTC (or nvcc in the compile test) sees: the placeholders, then the file.

    ``defines`` maps a placeholder name to an int (or a string spelled as C). A ``#line`` keeps
    compiler messages pointing at the line of the ``.cu`` file itself.
    """
    lines = [f"#define {k} {_c_value(v)}\n" for k, v in sorted((defines or {}).items())]
    return "".join(lines) + f'#line 1 "{filename}"\n' + source(filename)


def _c_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str) and v and "\n" not in v:
        return v
    raise TypeError(f"a #define value must be an int, a bool or a one-line string, got {v!r}")


def _key(defines):
    return tuple(sorted((defines or {}).items()))


def device_arch():
    """'sm_90' style name of the current device (compute capability major*10 + minor)."""
    import cupy as cp

    return "sm_" + cp.cuda.Device().compute_capability


@functools.lru_cache(maxsize=None)
def _module(filename, key, arch, options):
    import cupy as cp

    code = render(filename, dict(key))
    return cp.RawModule(code=code, options=options + (f"-arch={arch}",))


def module(filename, defines=None, options=NVRTC_OPTIONS):
    """The compiled RawModule for (file, defines, this device's arch), built on first use."""
    return _module(filename, _key(defines), device_arch(), tuple(options))


@functools.lru_cache(maxsize=None)
def _function(filename, key, arch, options, name, dyn_smem):
    fn = _module(filename, key, arch, options).get_function(name)
    if dyn_smem > 48 * 1024:  # above 48 KiB a kernel must opt in to dynamic shared memory
        fn.max_dynamic_shared_size_bytes = dyn_smem
    return fn


def function(filename, name, defines=None, dyn_smem=0, options=NVRTC_OPTIONS):
    """One ``extern "C"`` kernel of the module, opted in to ``dyn_smem`` bytes of dynamic
    shared memory when that is above the 48 KiB default."""
    return _function(filename, _key(defines), device_arch(), tuple(options), name, int(dyn_smem))


def _arg(a):
    # The kernels take `int` and `float` scalars: pass them as exactly 4-byte values (a Python
    # int would otherwise travel as 8 bytes and shift every argument after it).
    if isinstance(a, (bool, np.bool_)):
        return np.int32(int(a))
    if isinstance(a, (int, np.integer)):
        if not -(2**31) <= int(a) < 2**31:
            raise OverflowError(f"kernel int argument {a} does not fit in 32 bits")
        return np.int32(a)
    if isinstance(a, (float, np.floating)):
        return np.float32(a)
    return a  # device arrays


def launch(fn, grid, block, args, shared_mem=0):
    """fn(grid, block, args) with scalars converted to int32/float32; grid/block as tuples."""
    grid = tuple(int(g) for g in (grid if isinstance(grid, tuple) else (grid,)))
    block = tuple(int(b) for b in (block if isinstance(block, tuple) else (block,)))
    if any(g <= 0 for g in grid):
        return  # an empty problem: nothing to launch (CUDA rejects a zero-sized grid)
    fn(grid, block, tuple(_arg(a) for a in args), shared_mem=int(shared_mem))


# --------------------------------------------------------------------------- dtype checks
def is_cupy(a):
    return type(a).__module__.startswith("cupy")


def dtype_name(a):
    """'float32', 'float16', 'bfloat16', ... (ml_dtypes' bfloat16 names itself 'bfloat16')."""
    return np.dtype(a.dtype).name


def contiguous(a):
    import cupy as cp

    return cp.ascontiguousarray(a)


def aligned16(*arrays):
    """True when every array's data starts on a 16-byte boundary (float4/uint4 loads)."""
    return all(int(a.data.ptr) % 16 == 0 for a in arrays)
