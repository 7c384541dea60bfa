"""Mixed precision: float32 master weights, the forward and backward in bfloat16 or float16,
and dynamic loss scaling for float16 (Micikevicius et al. 2018, "Mixed Precision Training").

A training step under ``MixedPrecision("float16")`` (minillm/train/step.py):

  1. ``low_precision(params)``: each parameter's data becomes its float16 copy, so every matmul,
     norm and activation of the forward and backward runs in float16. The logits go into the
     loss in float32 (ops.cross_entropy casts half-precision logits up), so the loss is float32.
  2. ``scale_loss``: the loss times S before backward, so that small gradients do not flush to
     zero in float16 (its smallest normal is 6e-5).
  3. On leaving ``low_precision`` the float32 master data is back in place and each gradient is
     cast to float32; ``unscale_`` divides them by S (exact: S is a power of two).
  4. The gradient norm (one number from the device) says whether any gradient overflowed: then
     the step is skipped (weights and optimizer state untouched) and S halves; after
     ``growth_interval`` clean steps in a row S doubles.

bfloat16 has float32's exponent range, so it needs no loss scaling (``scaler`` is None). The
optimizer (AdamW) keeps its moments in float32 beside the float32 master weights. On the CPU
float16 is NumPy's and bfloat16 is ml_dtypes' (``pip install ml_dtypes``); the Numba kernels
take float32/float64 only, so the registry runs the NumPy reference for the low precisions
there (their ``fits``): right, and slow, meant for small tests of the logic.
"""

import contextlib
import math

import numpy as np

from minillm import backend
from minillm.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")


def low_dtype(name):
    """The NumPy dtype of a compute precision name, or a ConfigError naming the choices."""
    if name == "float32":
        return np.dtype(np.float32)
    if name == "float16":
        return np.dtype(np.float16)
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ConfigError("dtype bfloat16 needs the ml_dtypes package "
                              "(pip install ml_dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    raise ConfigError(f"the compute dtype must be one of {', '.join(DTYPES)}, got {name!r}")


class LossScaler:
    """Dynamic loss scale S for float16 training.

    ``update(finite)`` after each step: an overflow (inf or nan in the gradients) multiplies S
    by ``backoff_factor`` and tells the caller to skip the step; ``growth_interval`` finite
    steps in a row multiply S by ``growth_factor``. S stays within [min_scale, max_scale].
    """

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, min_scale=1.0, max_scale=2.0**24):
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1
                and int(growth_interval) >= 1 and 0 < min_scale <= max_scale):
            raise ConfigError(
                "loss scaling needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1, "
                "growth_interval >= 1 and 0 < min_scale <= max_scale")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.good_steps = 0  # finite steps since the last change of S
        self.skipped = 0  # steps skipped for an overflow, over the whole run

    def update(self, finite):
        """Record one step; returns True when its update may be applied (gradients finite)."""
        if not finite:
            self.scale = max(self.min_scale, self.scale * self.backoff_factor)
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale = min(self.max_scale, self.scale * self.growth_factor)
            self.good_steps = 0
        return True

    def state_dict(self):
        """JSON-serialisable: goes into a checkpoint's state.json so that a resume continues
        with the same scale."""
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, state):
        try:
            scale, good, skipped = float(state["scale"]), int(state["good_steps"]), int(state["skipped"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"a loss scaler state must hold scale, good_steps and skipped; "
                              f"got {state!r}") from None
        if not (math.isfinite(scale) and scale > 0 and good >= 0 and skipped >= 0):
            raise ConfigError(f"the loss scaler state {state!r} is out of range")
        self.scale, self.good_steps, self.skipped = scale, good, skipped


def _cast(a, dtype):
    try:
        return a.astype(dtype)
    except (TypeError, ValueError) as e:  # a CuPy without bfloat16 arrays, say
        raise ConfigError(f"{backend.device_of(a)} arrays cannot hold {dtype.name} here ({e}); "
                          f"use another dtype") from None


class MixedPrecision:
    """The compute precision of a training step: ``dtype`` "float32" (off), "bfloat16" or
    "float16" (with a LossScaler unless ``scaler`` is given; ``scaler=False`` turns it off)."""

    def __init__(self, dtype="float32", scaler=None):
        self.name = dtype
        self.dtype = low_dtype(dtype)
        if scaler is None:
            scaler = LossScaler() if dtype == "float16" else False
        self.scaler = scaler or None
        self.last_step_skipped = False

    @property
    def enabled(self):
        return self.name != "float32"

    @contextlib.contextmanager
    def low_precision(self, params):
        """Inside: each parameter's data is its copy in the low precision (the forward and
        backward run in it). After: the float32 master data back, each .grad in float32."""
        params = list({id(p): p for p in params}.values())  # tied weights once
        masters = [p.data for p in params]
        try:
            for p in params:
                if backend.is_float_dtype(p.data.dtype):
                    p.data = _cast(p.data, self.dtype)
            yield
        finally:
            for p, master in zip(params, masters):
                p.data = master
                if p.grad is not None and p.grad.dtype != master.dtype:
                    p.grad = p.grad.astype(master.dtype)

    def scale_loss(self, loss):
        return loss * self.scaler.scale if self.scaler is not None else loss

    def unscale_(self, params):
        """Divide every gradient by the loss scale in place (float32 gradients)."""
        if self.scaler is None:
            return
        inv = 1.0 / self.scaler.scale
        for p in params:
            if p.grad is not None:
                p.grad *= p.grad.dtype.type(inv)

    def state_dict(self):
        return {"dtype": self.name,
                **({"loss_scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_state_dict(self, state):
        if self.scaler is not None and "loss_scaler" in state:
            self.scaler.load_state_dict(state["loss_scaler"])
