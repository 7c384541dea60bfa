"""The stateless op namespace PyTorch users know as ``F``: ``import minillm.functional as F``
(also reachable as ``minillm.nn.functional``, PyTorch's spelling).

Every name is a differentiable op of ``minillm.ops`` or is composed from them here. Axes can be
named ``dim=`` (PyTorch) or ``axis=`` (NumPy).
"""

import numpy as np

from minillm import backend
from minillm.errors import MinillmError
from minillm.ops import (
    bias_gelu,
    cat,
    clamp,
    concat,
    dropout,
    embedding,
    exp,
    layer_norm,
    linear,
    log,
    log_softmax,
    masked_fill,
    matmul,
    relu,
    scaled_dot_product_attention,
    self_attention,
    sigmoid,
    softmax,
    split,
    sqrt,
    stack,
    tanh,
    where,
)
from minillm.ops import cross_entropy as _cross_entropy
from minillm.ops import gelu as _gelu

# Llama ops: RMSNorm, rotary embeddings, SwiGLU (fused Functions in minillm/ops/llama.py)
from minillm.ops.llama import rms_norm, rope, swiglu

__all__ = [
    "bias_gelu", "cat", "clamp", "concat", "cross_entropy", "dropout", "embedding", "exp", "gelu",
    "layer_norm", "linear", "log", "log_softmax", "masked_fill", "matmul", "mse_loss", "relu",
    "rms_norm", "rope", "scaled_dot_product_attention", "self_attention", "sigmoid", "silu",
    "softmax", "split", "sqrt", "stack", "swiglu", "tanh", "where",
]


def silu(x):
    """x * sigmoid(x), composed from primitives (autograd derives its backward)."""
    return x * x.sigmoid()


def gelu(x, approximate="tanh"):
    """GELU in GPT-2's tanh approximation, the only form minillm has (PyTorch's default
    ``approximate="none"`` is the erf form, which differs from it by less than 1e-3)."""
    if approximate != "tanh":
        raise MinillmError(f"gelu: only approximate='tanh' (GPT-2's form) is implemented, got "
                           f"{approximate!r}")
    return _gelu(x)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    """Cross-entropy of ``logits`` (..., V) against integer ``targets`` (...), leaving out
    targets equal to ``ignore_index``. ``reduction``: "mean" over the counted positions (0 when
    none counts), "sum", or "none" for the per-position losses (0 at ignored ones), as PyTorch.
    """
    if reduction == "mean":
        return _cross_entropy(logits, targets, ignore_index=ignore_index)
    if reduction not in ("sum", "none"):
        raise MinillmError(f"cross_entropy reduction must be 'mean', 'sum' or 'none', got "
                           f"{reduction!r}")
    t = targets.data if hasattr(targets, "data") else targets
    if reduction == "sum":
        n = int((t != ignore_index).sum())
        return _cross_entropy(logits, targets, ignore_index=ignore_index) * max(n, 1)
    # "none": -log p(target) at each position, picked out of log_softmax (composed)
    V = logits.shape[-1]
    t_host = backend.to_numpy(t).reshape(-1)
    if t_host.shape[0] != int(np.prod(logits.shape[:-1])):
        raise MinillmError(f"cross_entropy: logits of shape {tuple(logits.shape)} need targets "
                           f"of shape {tuple(logits.shape[:-1])}, got {tuple(t.shape)}")
    keep = t_host != ignore_index
    if keep.any() and (t_host[keep].min() < 0 or t_host[keep].max() >= V):
        raise MinillmError(f"cross_entropy target out of range 0..{V - 1}")
    rows = np.arange(t_host.shape[0])
    cols = np.where(keep, t_host, 0)
    logp = log_softmax(logits.reshape(-1, V), -1)  # (N, V)
    xp = backend.array_module(logits.data)
    picked = logp[xp.asarray(rows), xp.asarray(cols)]  # (N,)
    mask = xp.asarray(keep.astype(logits.dtype))
    return (-picked * mask).reshape(*logits.shape[:-1])


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2 averaged ("mean"), summed ("sum") or elementwise ("none")."""
    d = input - target
    sq = d * d
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    if reduction == "none":
        return sq
    raise MinillmError(f"mse_loss reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
