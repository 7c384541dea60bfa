"""Neural-network ops: embedding, softmax, log_softmax, cross_entropy, layer_norm, dropout,
bias+GELU and scaled dot-product attention.

The fused ones call their kernel through ``registry.get(name, like)`` (kernels/registry.py),
which picks the NumPy reference, a Numba CPU version or a CUDA version; their composite twins
(built from the primitive ops) are in ops/composite.py, and tests/ops/test_composite.py checks
both agree in values and gradients.
"""

import math

import numpy as np

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.kernels import registry
from minillm.kernels.reference import causal_mask
from minillm.ops._util import pick_dim
from minillm.tensor import Tensor


def _rows(x):
    """x: (..., C) as a 2-D (N, C) array, the layout the row kernels take."""
    return x.reshape(-1, x.shape[-1])


class Embedding(Function):
    """y = W[idx] with idx: (...) ints, W: (V, C) -> (..., C);
    dW = zeros with dy rows added at idx (a token seen twice gets both gradients)."""

    def forward(self, w, idx):
        if backend.is_cupy(w) and not backend.is_cupy(idx):
            idx = backend.to_device(idx, "cuda")  # once: the gather and the scatter-add use it
        self.saved = (idx, w.shape, w.dtype)
        return w[idx]

    def backward(self, dy):
        idx, shape, dtype = self.saved
        xp = backend.array_module(dy)
        dw = xp.zeros(shape, dtype=dtype)
        flat, rows = idx.reshape(-1), dy.reshape(-1, shape[1])
        if xp is not np:
            backend.scatter_add(dw, flat, rows)  # CuPy has no add.at: cupyx.scatter_add
        elif flat.size:
            # np.add.at is a slow scatter (12 ms at the small config); sorting the ids and
            # summing each run of equal ids with reduceat gives the same sums in 2 ms (stable:
            # deterministic)
            order = np.argsort(flat, kind="stable")
            ids = flat[order]
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            dw[ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
        return (dw,)


class Softmax(Function):
    """y = softmax(x) over the last axis;  dx = y * (dy - sum(dy * y))."""

    def forward(self, x):
        y = registry.get("softmax_forward", x)(x)
        self.saved = (y,)
        return y

    def backward(self, dy):
        y = self.saved[0]
        return (registry.get("softmax_backward", y)(dy, y),)


class LogSoftmax(Function):
    """y = x - logsumexp(x) over the last axis;  dx = dy - exp(y) * sum(dy)."""

    def forward(self, x):
        y = registry.get("log_softmax_forward", x)(x)
        self.saved = (y,)
        return y

    def backward(self, dy):
        y = self.saved[0]
        return (registry.get("log_softmax_backward", y)(dy, y),)


class CrossEntropy(Function):
    """loss = mean over rows n with t_n != ignore_index of -log softmax(logits_n)[t_n].

    logits: (N, V), targets: (N,) ints (constant). Fused: the forward keeps only the row
    log-sum-exp; the backward rebuilds softmax from it: dlogits = (p - onehot(t)) * dloss / count.
    """

    def forward(self, logits, targets, ignore_index):
        loss, lse = registry.get("cross_entropy_forward", logits)(logits, targets, ignore_index)
        self.saved = (logits, lse, targets, ignore_index)
        return loss

    def backward(self, dloss):
        logits, lse, targets, ignore_index = self.saved
        fn = registry.get("cross_entropy_backward", logits)
        return (fn(dloss, logits, lse, targets, ignore_index),)


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis (Ba et al. 2016).

    x: (..., C), w and b: (C,) or absent. Saves mean and rstd per row for the backward.
    """

    def forward(self, x, w=None, b=None, eps=1e-5):
        x2 = _rows(x)
        y, mean, rstd = registry.get("layernorm_forward", x2)(x2, w, b, eps)
        self.saved = (x2, w, mean, rstd, x.shape, b is not None)
        return y.reshape(x.shape)

    def backward(self, dy):
        x2, w, mean, rstd, shape, has_b = self.saved
        dx, dw, db = registry.get("layernorm_backward", x2)(_rows(dy), x2, w, mean, rstd)
        return (dx.reshape(shape), dw, db if has_b else None)


class Dropout(Function):
    """y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p) (inverted dropout);  dx = dy * mask/(1-p)."""

    def forward(self, x, p, generator):
        # drawn where x lives (on the GPU by a device generator that ``generator`` seeds)
        keep = backend.random_uniform(x.shape, like=x, generator=generator) >= p
        scale = (keep / (1.0 - p)).astype(x.dtype)
        self.saved = (scale,)
        return x * scale

    def backward(self, dy):
        return (dy * self.saved[0],)


class BiasGELU(Function):
    """y = gelu(x + b) with x: (..., C), b: (C,): the MLP's first Linear bias fused with GELU."""

    def forward(self, x, b):
        x2 = _rows(x)
        self.saved = (x2, b, x.shape)
        return registry.get("bias_gelu_forward", x2)(x2, b).reshape(x.shape)

    def backward(self, dy):
        x2, b, shape = self.saved
        dx, db = registry.get("bias_gelu_backward", x2)(_rows(dy), x2, b)
        return dx.reshape(shape), db


class Attention(Function):
    """Fused scaled dot-product attention: o = softmax(q k^T * scale [causal mask]) v.

    q: (B, H, Tq, D), k, v: (B, H, Tk, D). The kernel never builds the (Tq, Tk) probability
    matrix for the backward: it saves the row log-sum-exp and recomputes (FlashAttention).
    """

    def forward(self, q, k, v, scale, causal):
        o, lse = registry.get("attention_forward", q)(q, k, v, scale, causal)
        self.saved = (q, k, v, o, lse, scale, causal)
        return o

    def backward(self, do):
        q, k, v, o, lse, scale, causal = self.saved
        return registry.get("attention_backward", q)(do, q, k, v, o, lse, scale, causal)


class SelfAttention(Attention):
    """Attention straight from the fused projection: qkv (B, T, 3C) -> y (B, T, C).

    The heads are strided views into qkv (no reshape/permute/split copies, which cost as much as
    the softmax at the small config); the backward returns dqkv in qkv's layout.
    """

    def forward(self, qkv, n_head, scale, causal):
        B, T, C3 = qkv.shape
        q, k, v = _heads(qkv, n_head)
        o = Attention.forward(self, q, k, v, scale, causal)  # (B, H, T, D)
        return o.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)  # a view when o is (B, T, H, D)

    def backward(self, dy):
        q = self.saved[0]
        B, H, T, D = q.shape
        do = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        dq, dk, dv = Attention.backward(self, do)
        xp = backend.array_module(dy)
        dqkv = xp.empty((B, T, 3, H, D), dtype=dy.dtype)
        for i, g in enumerate((dq, dk, dv)):
            dqkv[:, :, i] = g.transpose(0, 2, 1, 3)
        return (dqkv.reshape(B, T, 3 * H * D),)


def _heads(qkv, n_head):
    """q, k, v as (B, H, T, D) views of a (B, T, 3C) buffer laid out [q | k | v], heads in order."""
    B, T, C3 = qkv.shape
    per_head = qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head))
    return tuple(per_head[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


# ---------------------------------------------------------------------------- functions
def embedding(idx, weight):
    """Rows of ``weight`` (V, C) at integer ``idx`` (any shape) -> (..., C)."""
    data = idx.data if isinstance(idx, Tensor) else idx
    on_device = backend.is_cupy(data)
    if not on_device:
        data = np.asarray(data)
    if data.dtype.kind not in "iu":
        raise MinillmError(f"embedding indices must be integers, got {data.dtype}")
    # the range is checked on the host; indices already on the GPU (minillm's sampling and
    # position ids) are not copied back for it, which would stall the device at every call
    if not on_device and data.size and (int(data.min()) < 0 or int(data.max()) >= weight.shape[0]):
        raise MinillmError(
            f"embedding index out of range: indices span {int(data.min())}..{int(data.max())} "
            f"but the table has {weight.shape[0]} rows"
        )
    return Embedding.apply(weight, idx=data)


def _last_axis(fn, x, axis):
    if axis in (-1, x.ndim - 1):
        return fn(x)
    return fn(x.transpose(axis, -1)).transpose(axis, -1)


def softmax(x, axis=None, *, dim=None):
    """Softmax along ``axis`` or ``dim`` (either spelling; the last axis by default)."""
    return _last_axis(Softmax.apply, x, pick_dim(axis, dim, -1))


def log_softmax(x, axis=None, *, dim=None):
    """log(softmax) along ``axis`` or ``dim`` (either spelling; the last axis by default)."""
    return _last_axis(LogSoftmax.apply, x, pick_dim(axis, dim, -1))


def cross_entropy(logits, targets, ignore_index=-100):
    """Mean cross-entropy of ``logits`` (..., V) against integer ``targets`` (...), leaving out
    positions equal to ``ignore_index`` (PyTorch's default -100). All ignored gives 0."""
    t = targets.data if isinstance(targets, Tensor) else targets
    on_device = backend.is_cupy(t)
    if not on_device:
        t = np.asarray(t)
    if t.dtype.kind not in "iu":
        raise MinillmError(f"cross_entropy targets must be integers, got {t.dtype}")
    if logits.shape[:-1] != t.shape:
        raise MinillmError(
            f"cross_entropy: logits of shape {tuple(logits.shape)} need targets of shape "
            f"{tuple(logits.shape[:-1])}, got {tuple(t.shape)}"
        )
    V = logits.shape[-1]
    if not on_device:  # checked on the host; targets already on the GPU are not copied back
        valid = t[t != ignore_index]
        if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= V):
            raise MinillmError(f"cross_entropy target out of range 0..{V - 1}")
    flat = logits if logits.ndim == 2 else logits.reshape(-1, V)
    if flat.dtype.name in ("float16", "bfloat16"):
        # mixed precision: the loss (exp, log-sum-exp over V) in float32, whatever the logits;
        # the cast's backward hands the gradient back in the logits' dtype
        flat = flat.float()
    t = t.reshape(-1)
    if backend.is_cupy(logits.data):
        t = backend.to_device(t, "cuda")  # the kernel (or the reference on CuPy) reads them there
    return CrossEntropy.apply(flat, targets=t, ignore_index=ignore_index)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    C = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (C,):
            raise MinillmError(f"layer_norm {name} has shape {tuple(p.shape)}, expected ({C},)")
    if weight is None and bias is None:
        return LayerNorm.apply(x, eps=eps)
    if bias is None:
        return LayerNorm.apply(x, weight, eps=eps)
    if weight is None:
        raise MinillmError("layer_norm with a bias needs a weight too")
    return LayerNorm.apply(x, weight, bias, eps=eps)


def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout: in training, zero each element with probability p and scale the rest
    by 1/(1-p); in eval (training=False) or with p=0 it returns x unchanged."""
    if not 0.0 <= p < 1.0:
        raise MinillmError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p, generator=generator or backend.rng())


def bias_gelu(x, bias):
    return BiasGELU.apply(x, bias)


def self_attention(qkv, n_head, causal=True, scale=None):
    """Multi-head self-attention from a fused projection: qkv (B, T, 3C) laid out [q | k | v]
    with the heads in order inside each -> (B, T, C), the heads side by side (the fused kernel)."""
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
        raise MinillmError(
            f"self_attention needs qkv of shape (B, T, 3 * n_head * head_dim), got "
            f"{tuple(qkv.shape)} with n_head={n_head}"
        )
    D = qkv.shape[-1] // (3 * n_head)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    return SelfAttention.apply(qkv, n_head=int(n_head), scale=scale, causal=bool(causal))


def scaled_dot_product_attention(q, k, v, causal=True, scale=None, mask=None):
    """Attention over q: (B, H, Tq, D), k, v: (B, H, Tk, D) -> (B, H, Tq, D).

    Without ``mask`` this is the fused kernel (causal or not). With ``mask`` (bool, broadcasting
    to (B, H, Tq, Tk), True = may attend) it is composed from primitive ops, which is what batched
    generation with left padding needs.
    """
    if q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[:2] != k.shape[:2]:
        raise MinillmError(
            f"attention shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[-2] > k.shape[-2] and causal:
        raise MinillmError(f"causal attention needs Tk >= Tq, got Tq={q.shape[-2]}, Tk={k.shape[-2]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if mask is None:
        return Attention.apply(q, k, v, scale=scale, causal=bool(causal))
    from minillm.ops.elementwise import masked_fill

    Tq, Tk = q.shape[-2], k.shape[-2]
    allowed = mask.data if isinstance(mask, Tensor) else mask
    xp = backend.array_module(q.data)
    if backend.is_cupy(q.data):
        allowed = backend.to_device(allowed, "cuda")
    if causal:
        allowed = allowed & causal_mask(xp, Tq, Tk)
    s = (q @ k.transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
    s = masked_fill(s, ~allowed, -1e30 if s.dtype == np.float32 else -1e300)
    return softmax(s, -1) @ v
