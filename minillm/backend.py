"""Devices, array modules, dtypes, the random generator and the kernel setting.

The only module of minillm (outside kernels/) that may import cupy, and it does so lazily, inside
the functions that need it: a CPU-only install never touches cupy, and ``import minillm`` works
with nothing but NumPy.
"""

import numpy as np

from minillm.errors import MinillmError

DEFAULT_DTYPE = np.float32  # float32 by default; float64 works everywhere (gradient checks)


# ----------------------------------------------------------------------------- array modules
# The module that stands for cupy. None means the real cupy, imported on first use; tests put a
# recording fake with cupy's API here (tests/fake_cupy.py) to run the GPU code paths on the CPU
# and find calls CuPy lacks or that copy to the host. Its arrays' class must live in a module
# whose name starts with "cupy" (how is_cupy and the kernel registry tell device arrays apart).
_device_module = None


def use_device_module(module):
    """Stand ``module`` in for cupy (None: the real cupy again); returns the one it replaces.

    ``module`` has cupy's API plus ``module.cupyx.scatter_add``. For tests only: it lets the
    GPU code paths run without a GPU, to check which functions they call.
    """
    global _device_module
    previous, _device_module = _device_module, module
    _device_rngs.clear()
    return previous


def cupy():
    """Import and return cupy, or fail with one sentence saying how to get it."""
    if _device_module is not None:
        return _device_module
    try:
        import cupy as cp
    except ImportError as e:
        raise MinillmError(
            "device 'cuda' needs CuPy and an NVIDIA GPU (pip install 'minillm[gpu]')"
        ) from e
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # cupy present but no usable GPU/driver
        raise MinillmError(f"device 'cuda' is not usable here: {e}") from e
    return cp


def nccl():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``: gradient all-reduce across GPUs), or one
    sentence saying they are missing."""
    cupy()
    try:
        from cupy.cuda import nccl as bindings
    except ImportError:
        bindings = None
    if bindings is None or not getattr(bindings, "available", True):
        raise MinillmError("data-parallel training on GPUs needs NCCL, which this CuPy cannot "
                           "load; install NCCL as CuPy's installation guide says (Additional "
                           "CUDA Libraries)")
    return bindings


def is_cupy(a):
    return type(a).__module__.startswith("cupy")


def array_module(a):
    """numpy for NumPy arrays, cupy for CuPy arrays (without importing cupy otherwise)."""
    return cupy() if is_cupy(a) else np


def device_of(a):
    return "cuda" if is_cupy(a) else "cpu"


def check_device(device):
    device = str(device).lower()
    if device.startswith("cuda"):
        return "cuda"
    if device == "cpu":
        return "cpu"
    raise MinillmError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


def to_device(a, device):
    """Move an array to 'cpu' (NumPy) or 'cuda' (CuPy); a no-op when it is already there."""
    device = check_device(device)
    if device == "cuda":
        cp = cupy()
        return a if is_cupy(a) else cp.asarray(a)
    return a.get() if is_cupy(a) else a


def to_numpy(a):
    return a.get() if is_cupy(a) else np.asarray(a)


def is_float_dtype(dtype):
    return np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16"


def scatter_add(a, index, values):
    """a[index] += values in place, where repeated indices add up (NumPy's ``np.add.at``).

    CuPy has no ``ufunc.at``; its ``cupyx.scatter_add`` does the same with atomic adds.
    """
    if is_cupy(a):
        cupyx = _device_module.cupyx if _device_module is not None else _import_cupyx()
        if a.dtype.itemsize == 2:  # float16/bfloat16: atomic adds in float32, then rounded once
            acc = a.astype(np.float32)
            cupyx.scatter_add(acc, index, values.astype(np.float32))
            a[...] = acc.astype(a.dtype)
        else:
            cupyx.scatter_add(a, index, values)
    else:
        np.add.at(a, index, values)


def _import_cupyx():
    cupy()  # the one-sentence error when CuPy or the GPU is missing
    import cupyx

    return cupyx


# ----------------------------------------------------------------------------- randomness
# One generator for everything minillm draws (initialisation, dropout): seeding it makes runs
# repeat, and its state goes into training checkpoints so that a resumed run repeats too.
_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Seed minillm's global generator (initialisation, dropout masks)."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def rng():
    return _rng


def get_rng_state():
    """A JSON-serialisable snapshot of the global generator."""
    return _rng.bit_generator.state


def set_rng_state(state):
    _rng.bit_generator.state = state


_device_rngs = {}  # id(array module) -> its RandomState, reseeded for every draw


def random_uniform(shape, like=None, generator=None, dtype=np.float32):
    """Uniform samples in [0, 1) of ``shape`` on the device of ``like`` (dropout masks).

    On the CPU they come from ``generator`` (default: the global one). On the GPU they are drawn
    on the device, by a device generator seeded with one integer drawn from ``generator``: the
    host generator, whose state goes into checkpoints, still decides every mask (CuPy's own
    generator states cannot be saved), and no mask crosses the PCIe bus.
    """
    generator = _rng if generator is None else generator
    if like is None or not is_cupy(like):
        return generator.random(shape, dtype=dtype)
    xp = cupy()
    rs = _device_rngs.get(id(xp))
    if rs is None:
        rs = _device_rngs[id(xp)] = xp.random.RandomState()
    rs.seed(int(generator.integers(2**63)))
    return rs.random_sample(shape, dtype=dtype)


# ----------------------------------------------------------------------------- kernels
def set_kernels(mode):
    """Pick the kernels behind the fused ops: "auto" (Numba when installed), "reference"
    (plain NumPy) or "numba". The environment variable MINILLM_KERNELS sets the start value."""
    from minillm.kernels import registry

    try:
        registry.set_mode(mode)
    except (ValueError, RuntimeError) as e:
        raise MinillmError(str(e)) from None


def get_kernels():
    from minillm.kernels import registry

    return registry.get_mode()
