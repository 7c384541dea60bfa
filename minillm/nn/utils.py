"""``minillm.nn.utils``: gradient clipping over a model's parameters, as ``torch.nn.utils``."""

import math

import numpy as np

from minillm.errors import MinillmError
from minillm.tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale every gradient in place so that their joint ``norm_type``-norm (2: the L2 norm of
    all gradient entries together; inf: the largest |entry|) is at most ``max_norm``. Returns
    the norm before clipping as a 0-d float64 Tensor (``float(norm)`` gives the number).
    Parameters without a gradient are skipped; ``max_norm`` None or <= 0 only measures."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise MinillmError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
    if not grads:
        return Tensor(np.zeros((), dtype=np.float64))
    if norm_type == math.inf:
        total = max(float(abs(g).max()) for g in grads if g.size)
    else:  # accumulated in float64 so float16/32 gradients do not lose the sum
        total = sum(float(_power_sum(g.astype(np.float64, copy=False), norm_type)) for g in grads)
        total = total ** (1.0 / norm_type)
    if max_norm is not None and max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= g.dtype.type(scale)
    return Tensor(np.asarray(total, dtype=np.float64))


def _power_sum(g, p):
    """sum |g|^p (p = 2: sum g*g, the common case, without a power)."""
    return (g * g).sum() if p == 2.0 else (abs(g) ** p).sum()
