"""``minillm.nn.utils``: gradient clipping over a model's parameters, as ``torch.nn.utils``."""

import math

import numpy as np

from minillm import backend
from minillm.errors import MinillmError
from minillm.tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale every gradient in place so that their joint ``norm_type``-norm (2: the L2 norm of
    all gradient entries together; inf: the largest |entry|) is at most ``max_norm``. Returns
    the norm before clipping as a 0-d float64 Tensor on the host (``float(norm)`` gives the
    number; inf or nan when a gradient holds one). Parameters without a gradient are skipped;
    ``max_norm`` None or <= 0 only measures.

    The per-gradient sums are taken in float64 and, on the GPU, stay on the device and are
    combined there, so the whole norm costs one transfer to the host.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise MinillmError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
    grads_nonempty = [g for g in grads if g.size]
    if not grads_nonempty:
        return Tensor(np.zeros((), dtype=np.float64))
    parts = [_part(g.astype(np.float64, copy=False), norm_type) for g in grads_nonempty]
    if backend.is_cupy(grads_nonempty[0]):  # combined on the device: the one transfer
        xp = backend.array_module(grads_nonempty[0])
        stacked = xp.stack(parts)
        total = float(stacked.max() if norm_type == math.inf else stacked.sum())
    elif norm_type == math.inf:
        total = max(float(s) for s in parts)
    else:  # added one by one in order, so the CPU norm is the same number on every run
        total = sum(float(s) for s in parts)
    if norm_type == 2.0:
        total = math.sqrt(total)
    elif norm_type != math.inf:
        total = total ** (1.0 / norm_type)
    if max_norm is not None and max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= g.dtype.type(scale)
    return Tensor(np.asarray(total, dtype=np.float64))


def _part(g, p):
    """One gradient's share, a 0-d float64 array on its device: sum |g|^p (p = 2: sum g*g,
    without a power), or max |g| for p = inf."""
    if p == math.inf:
        return abs(g).max()
    return (g * g).sum() if p == 2.0 else (abs(g) ** p).sum()
