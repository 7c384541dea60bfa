"""Composite twins of the fused ops: the same functions written with ordinary Tensor ops.

Each fused op in ops/nn.py, ops/linalg.py and ops/elementwise.py (a Function whose forward and
backward are kernels) has a twin here built only from primitive differentiable ops (exp, log,
sum, max, matmul, indexing, ...). A twin has no backward of its own: autograd derives it from
the primitives, so it is correct whenever the primitives are (each has a float64 gradient check).
tests/ops/test_composite.py holds every fused op to its twin, forward and backward.

The twins are the readable definitions, not the fast path: they build every intermediate
(the (Tq, Tk) attention probabilities, the (N, V) log-probabilities) and keep it for the backward.

Shape letters: N rows, C channels, V vocabulary, B batch, H heads, Tq / Tk query and key
lengths, D head size.
"""

import math

import numpy as np

from minillm import backend
from minillm.kernels.reference import GELU_A, GELU_K
from minillm.tensor import Tensor


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m) along ``axis``, m = max_j x_j.

    Subtracting m keeps exp from overflowing and does not change the result (softmax is
    invariant to adding a constant), so m is taken as a constant (detached) and no gradient
    flows through the max.
    """
    m = x.max(axis=axis, keepdims=True).detach()
    e = (x - m).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log_softmax(x)_i = x_i - logsumexp(x) = (x_i - m) - log sum_j exp(x_j - m), m = max x."""
    z = x - x.max(axis=axis, keepdims=True).detach()
    return z - z.exp().sum(axis=axis, keepdims=True).log()


def cross_entropy(logits, targets, ignore_index=-100):
    """loss = (1/n) sum over counted rows r of -log_softmax(logits_r)[t_r].

    logits: (..., V), targets: (...) ints. A row counts when its target is not ``ignore_index``;
    n is the number of counted rows, and the loss is 0 when no row counts.
    """
    V = logits.shape[-1]
    logp = log_softmax(logits.reshape(-1, V))  # (N, V)
    t = backend.to_numpy(targets.data if isinstance(targets, Tensor) else targets).reshape(-1)
    rows = np.flatnonzero(t != ignore_index)  # the counted rows, (n,)
    cols = t[rows]
    if backend.is_cupy(logp.data):
        rows, cols = backend.to_device(rows, "cuda"), backend.to_device(cols, "cuda")
    nll = -logp[rows, cols]  # (n,)
    return nll.sum() / max(len(rows), 1)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (Ba et al. 2016).

    x: (..., C); mean and var (the biased variance, 1/C) per row; weight and bias: (C,) or None.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    y = xc / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def gelu(x):
    """GPT-2's GELU, the tanh approximation (Hendrycks & Gimpel 2016):
    y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + (GELU_K * (x + GELU_A * x * x * x)).tanh())


def bias_gelu(x, bias):
    """y = gelu(x + bias); x: (..., C), bias: (C,) (the MLP's first Linear bias and GELU)."""
    return gelu(x + bias)


def linear(x, weight, bias=None):
    """y = x W^T + b; x: (..., C_in), W: (C_out, C_in), b: (C_out,) or None -> (..., C_out)."""
    y = x @ weight.transpose(-1, -2)
    return y if bias is None else y + bias


def causal_mask(Tq, Tk):
    """(Tq, Tk) bool, True where query i may see key j: j <= i + (Tk - Tq).

    The queries are the last Tq of Tk positions (Tq < Tk is a step with a KV cache), so query i
    sits at absolute position Tk - Tq + i and sees every key up to and including its own.
    """
    return np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq)


def attention(q, k, v, causal=True, scale=None, mask=None):
    """o = softmax(q k^T * scale, masked) v (Vaswani et al. 2017), scale = 1/sqrt(D) by default.

    q: (B, H, Tq, D), k, v: (B, H, Tk, D) -> o: (B, H, Tq, D). A key is visible to a query where
    ``mask`` (bool, broadcasting to (B, H, Tq, Tk), True = may attend; None = all) and, with
    ``causal``, ``causal_mask(Tq, Tk)`` are both true. Hidden scores are replaced by a number
    so negative that exp gives exactly 0, so hidden keys get probability 0 and no gradient.
    """
    Tq, Tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    allowed = np.ones((Tq, Tk), dtype=bool)
    if mask is not None:
        allowed = allowed & backend.to_numpy(mask.data if isinstance(mask, Tensor) else mask)
    if causal:
        allowed = allowed & causal_mask(Tq, Tk)
    s = (q @ k.transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
    s = s.masked_fill(~allowed, float(np.finfo(s.dtype).min) / 2)
    return softmax(s, axis=-1) @ v  # (B, H, Tq, D)


def self_attention(qkv, n_head, causal=True, scale=None):
    """Multi-head self-attention from a fused projection: qkv (B, T, 3C) laid out [q | k | v],
    heads in order inside each -> (B, T, C), the heads' outputs side by side."""
    B, T, C3 = qkv.shape
    D = C3 // (3 * n_head)
    heads = qkv.reshape(B, T, 3, n_head, D).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
    o = attention(heads[0], heads[1], heads[2], causal=causal, scale=scale)  # (B, H, T, D)
    return o.permute(0, 2, 1, 3).reshape(B, T, C3 // 3)  # (B, T, C)
