"""Devices, array modules, dtypes, the random generator and the kernel setting.

The only module of minillm (outside kernels/) that may import cupy, and it does so lazily, inside
the functions that need it: a CPU-only install never touches cupy, and ``import minillm`` works
with nothing but NumPy.
"""

import numpy as np

from minillm.errors import MinillmError

DEFAULT_DTYPE = np.float32  # float32 by default; float64 works everywhere (gradient checks)


# ----------------------------------------------------------------------------- array modules
def cupy():
    """Import and return cupy, or fail with one sentence saying how to get it."""
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
    return np.dtype(dtype).kind == "f"


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
