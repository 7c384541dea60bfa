"""Plain-array reference kernels: the readable definition of every hot op, forward and backward.

Every function takes arrays (NumPy or CuPy: the array module is read off the input, so the same
code is the CPU ground truth and the GPU fallback) and returns new arrays. Nothing here knows
about Tensor or autograd. The fast versions in ``kernels/cpu`` (Numba) and ``kernels/cuda``
(CUDA C) compute the same functions and are tested against these, forward and backward.

Shape letters: N rows (B*T flattened), C channels, V vocabulary, B batch, H heads,
T / Tq / Tk sequence lengths, D head size.
"""

import functools
import math

import numpy as np

from .quant import Q8_0, dequantize, quantize

# functions of this module that build inputs for the kernels and are not kernels themselves
# (kernels/registry.py lists every other function here as an op)
HELPERS = ("causal_mask", "rope_cos_sin")

GELU_K = math.sqrt(2.0 / math.pi)  # GELU tanh approximation (Hendrycks & Gimpel), as GPT-2 uses
GELU_A = 0.044715


def _xp(a):
    """The array module of ``a`` (numpy or cupy) without importing cupy."""
    return np if isinstance(a, np.ndarray) else __import__(type(a).__module__.split(".")[0])


def _is_half(a):
    dtype = getattr(a, "dtype", None)
    return dtype is not None and dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16")


def _half_in_float32(keep=()):
    """Run a reference on 2-byte float inputs (float16, bfloat16) in float32 and round its outputs
    back to that dtype, except the outputs at positions ``keep`` (row statistics such as lse,
    mean, rstd), which stay float32. This is what the GPU kernels do with half-precision data
    (load it, compute and accumulate in float32, store it rounded), and NumPy's own float16 /
    ml_dtypes' bfloat16 arithmetic would lose most of the digits in the sums. Other dtypes pass
    through untouched."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            low = next((a.dtype for a in args if _is_half(a)), None)
            if low is None:
                return fn(*args, **kwargs)
            out = fn(*(a.astype(np.float32) if _is_half(a) else a for a in args), **kwargs)
            if not isinstance(out, tuple):
                return out.astype(low)
            return tuple(o if o is None or i in keep else o.astype(low) for i, o in enumerate(out))

        return run

    return wrap


# --------------------------------------------------------------------------- matmul
@_half_in_float32()
def matmul(a, b):
    """out = a @ b, batch dims broadcast. The BLAS call is the reference and the default."""
    return a @ b


# --------------------------------------------------------------------------- softmax
@_half_in_float32()
def softmax_forward(x):
    """y = exp(x - max) / sum(exp(x - max)) over the last axis.  x, y: (..., V)"""
    xp = _xp(x)
    z = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@_half_in_float32()
def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y)) over the last axis (the Jacobian is diag(y) - y y^T)."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


@_half_in_float32()
def log_softmax_forward(x):
    """y = x - logsumexp(x) over the last axis.  x, y: (..., V)"""
    xp = _xp(x)
    m = x.max(axis=-1, keepdims=True)
    lse = m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))
    return x - lse


@_half_in_float32()
def log_softmax_backward(dy, y):
    """dx = dy - softmax(x) * sum(dy), with softmax(x) = exp(y)."""
    xp = _xp(y)
    return dy - xp.exp(y) * dy.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- cross-entropy
@_half_in_float32(keep=(0, 1))
def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean negative log-likelihood of ``targets`` under softmax(logits).

    logits: (N, V) float   targets: (N,) int   returns (loss, lse) with loss a 0-d array and
    lse: (N,) the log-sum-exp of each row, saved for the backward. Rows whose target equals
    ``ignore_index`` are left out of the mean; if every row is ignored the loss is 0 (not NaN,
    so that a batch of prompt-only tokens cannot poison a fine-tuning run).
    """
    xp = _xp(logits)
    m = logits.max(axis=-1)
    lse = m + xp.log(xp.exp(logits - m[:, None]).sum(axis=-1))  # (N,)
    valid = targets != ignore_index
    safe_t = xp.where(valid, targets, 0)
    picked = xp.take_along_axis(logits, safe_t[:, None].astype(xp.int64), axis=-1)[:, 0]
    nll = xp.where(valid, lse - picked, 0.0)
    count = xp.maximum(valid.sum(), 1)  # stays on the device: no host sync on CuPy
    loss = nll.sum() / count.astype(nll.dtype)
    return xp.asarray(loss, dtype=logits.dtype), lse


@_half_in_float32()
def cross_entropy_backward(dloss, logits, lse, targets, ignore_index=-100):
    """dlogits = dloss * (softmax(logits) - onehot(targets)) / count; ignored rows get 0."""
    xp = _xp(logits)
    valid = targets != ignore_index
    count = xp.maximum(valid.sum(), 1)  # on the device, like dloss: no host sync on CuPy
    p = xp.exp(logits - lse[:, None])  # (N, V)
    rows = xp.arange(logits.shape[0])
    p[rows, xp.where(valid, targets, 0)] -= 1.0
    p *= (valid[:, None] * (xp.asarray(dloss, dtype=xp.float64) / count)).astype(logits.dtype)
    return p


# --------------------------------------------------------------------------- layer norm
@_half_in_float32(keep=(1, 2))
def layernorm_forward(x, w, b, eps=1e-5):
    """y = (x - mean) * rstd * w + b over the last axis (Ba, Kiros & Hinton 2016).

    x: (N, C)  w, b: (C,) or None  returns y (N, C), mean (N,), rstd (N,) for the backward.
    """
    xp = _xp(x)
    mean = x.mean(axis=-1)
    xc = x - mean[:, None]
    var = (xc * xc).mean(axis=-1)
    rstd = 1.0 / xp.sqrt(var + eps)
    y = xc * rstd[:, None]
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y, mean, rstd


@_half_in_float32()
def layernorm_backward(dy, x, w, mean, rstd):
    """Gradients of layernorm_forward. Returns dx (N, C), dw (C,) or None, db (C,).

    With xhat = (x - mean) * rstd and g = dy * w:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum_n dy * xhat,  db = sum_n dy.
    """
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dy * w if w is not None else dy
    dx = rstd[:, None] * (
        g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)
    )
    dw = (dy * xhat).sum(axis=0) if w is not None else None
    db = dy.sum(axis=0)
    return dx, dw, db


# --------------------------------------------------------------------------- GELU
@_half_in_float32()
def gelu_forward(x):
    """y = 0.5 x (1 + tanh(k (x + a x^3))), k = sqrt(2/pi), a = 0.044715 (GPT-2's GELU)."""
    xp = _xp(x)
    return 0.5 * x * (1.0 + xp.tanh(GELU_K * (x + GELU_A * x * x * x)))


@_half_in_float32()
def gelu_backward(dy, x):
    """dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2), t = tanh(k (x + a x^3))."""
    xp = _xp(x)
    t = xp.tanh(GELU_K * (x + GELU_A * x * x * x))
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_A * x * x))


@_half_in_float32()
def bias_gelu_forward(x, b):
    """y = gelu(x + b).  x: (N, C)  b: (C,)  (the MLP's first Linear epilogue)."""
    return gelu_forward(x + b)


@_half_in_float32()
def bias_gelu_backward(dy, x, b):
    """Returns dx (N, C) and db (C,) of y = gelu(x + b)."""
    dx = gelu_backward(dy, x + b)
    return dx, dx.sum(axis=0)


# --------------------------------------------------------------------------- attention
@_half_in_float32(keep=(1,))
def attention_forward(q, k, v, scale, causal=True):
    """Scaled dot-product attention (Vaswani et al. 2017), materialising the score matrix.

    q: (B, H, Tq, D)  k, v: (B, H, Tk, D) with Tk >= Tq. With ``causal``, query i sits at
    absolute position Tk - Tq + i and sees keys 0..Tk - Tq + i (so Tq < Tk is a KV-cache step).
    Returns o: (B, H, Tq, D) and lse: (B, H, Tq), the log-sum-exp of each score row, which is
    all the backward needs to rebuild the probabilities.
    """
    xp = _xp(q)
    Tq, Tk = q.shape[-2], k.shape[-2]
    s = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, Tq, Tk)
    if causal:
        s = xp.where(causal_mask(xp, Tq, Tk), s, -xp.inf)
    m = s.max(axis=-1, keepdims=True)
    e = xp.exp(s - m)
    l = e.sum(axis=-1, keepdims=True)
    o = (e / l) @ v  # (B, H, Tq, D)
    return o, (m + xp.log(l))[..., 0]


@_half_in_float32()
def attention_backward(do, q, k, v, o, lse, scale, causal=True):
    """Gradients of attention_forward from the saved lse. Returns dq, dk, dv.

    p = exp(s - lse); dv = p^T do; dp = do v^T; ds = p * (dp - rowsum(do * o)); dq = ds k * scale;
    dk = ds^T q * scale. rowsum(do * o) equals rowsum(p * dp) and is cheaper.
    """
    xp = _xp(q)
    Tq, Tk = q.shape[-2], k.shape[-2]
    s = (q @ k.swapaxes(-1, -2)) * scale
    if causal:
        s = xp.where(causal_mask(xp, Tq, Tk), s, -xp.inf)
    p = xp.exp(s - lse[..., None])  # (B, H, Tq, Tk)
    dv = p.swapaxes(-1, -2) @ do
    dp = do @ v.swapaxes(-1, -2)
    delta = (do * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv


@_half_in_float32(keep=(1,))
def attention_ragged_forward(q, k, v, lengths, scale):
    """A decode step over rows of different lengths (a server's batch in one KV cache): row b's
    queries q[b] (H, Tq, D) see keys 0..lengths[b]-1 of k[b], v[b] (H, Tk, D), all of them
    (the step's own keys lie inside the lengths); what lies past a row's length is another
    row's, stale or zero. lengths: (B,) ints in 1..Tk. Returns o (B, H, Tq, D) and lse
    (B, H, Tq), as attention_forward."""
    xp = _xp(q)
    s = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, Tq, Tk)
    seen = xp.arange(k.shape[-2])[None, :] < xp.asarray(lengths)[:, None]  # (B, Tk)
    s = xp.where(seen[:, None, None, :], s, -xp.inf)
    m = s.max(axis=-1, keepdims=True)
    e = xp.exp(s - m)
    l = e.sum(axis=-1, keepdims=True)
    return (e / l) @ v, (m + xp.log(l))[..., 0]


@_half_in_float32()
def attention_varlen_forward(q, k, v, starts, ends, prefix, scale):
    """Causal attention of sequences packed end to end in one row ("varlen", as
    FlashAttention's cumulative sequence lengths): q (H, N, D), k, v (Hkv, N, D), query head h
    reading key/value head h // (H / Hkv) (grouped-query attention). Sequence j holds positions
    starts[j]..ends[j]-1; its query i sees keys 0..prefix[j]-1 (a prefix the sequences share,
    itself one of the sequences, with prefix 0) and its own keys starts[j]..i. Every position
    belongs to one sequence. Returns o (H, N, D) and lse (H, N), as attention_forward."""
    xp = _xp(q)
    H, N, _ = q.shape
    rep = H // k.shape[0]
    seen = xp.zeros((N, N), dtype=bool)  # (query, key)
    for s0, s1, p in zip(starts, ends, prefix):
        s0, s1, p = int(s0), int(s1), int(p)
        seen[s0:s1, :p] = True
        seen[s0:s1, s0:s1] = xp.arange(s1 - s0)[None, :] <= xp.arange(s1 - s0)[:, None]
    s = (q @ xp.repeat(k, rep, axis=0).swapaxes(-1, -2)) * scale  # (H, N, N)
    s = xp.where(seen, s, -xp.inf)
    m = s.max(axis=-1, keepdims=True)
    e = xp.exp(s - m)
    l = e.sum(axis=-1, keepdims=True)
    return (e / l) @ xp.repeat(v, rep, axis=0), (m + xp.log(l))[..., 0]


def causal_mask(xp, Tq, Tk):
    """(Tq, Tk) bool: True where query i (absolute position Tk - Tq + i) may see key j."""
    return xp.arange(Tk)[None, :] <= (xp.arange(Tq)[:, None] + (Tk - Tq))


# --------------------------------------------------------------------------- AdamW
def adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW update in place (Loshchilov & Hutter 2019, decoupled weight decay).

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
    p = p - lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p).   ``step`` t counts from 1.
    """
    xp = _xp(p)
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    mhat = m / (1.0 - beta1**step)
    vhat = v / (1.0 - beta2**step)
    p -= lr * (mhat / (xp.sqrt(vhat) + eps) + weight_decay * p)


# =========================================================================== Llama ops
# RMSNorm, rotary position embeddings and the SwiGLU gate: the three ops a Llama block adds to
# GPT-2's (minillm/ops/llama.py wraps them for autograd, kernels/cpu and kernels/cuda hold the
# fast versions).


# --------------------------------------------------------------------------- RMSNorm
@_half_in_float32(keep=(1,))
def rms_norm_forward(x, w, eps=1e-5):
    """y = x * rrms * w,  rrms = 1 / sqrt(mean_c(x^2) + eps)  (Zhang & Sennrich 2019).

    Layer norm without the mean: no centring, no bias. x: (N, C)  w: (C,)
    Returns y (N, C) and rrms (N,), the one number per row the backward needs.
    """
    xp = _xp(x)
    rrms = 1.0 / xp.sqrt((x * x).mean(axis=-1) + eps)  # (N,)
    return x * rrms[:, None] * w, rrms


@_half_in_float32()
def rms_norm_backward(dy, x, w, rrms):
    """Gradients of rms_norm_forward. Returns dx (N, C), dw (C,).

    With xhat = x * rrms and g = dy * w, since d rrms / d x_c = -rrms^3 x_c / C:
    dx = rrms * (g - xhat * mean_c(g * xhat)),  dw = sum_n dy * xhat.
    """
    xhat = x * rrms[:, None]
    g = dy * w
    dx = rrms[:, None] * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    dw = (dy * xhat).sum(axis=0)
    return dx, dw


# --------------------------------------------------------------------------- rotary embeddings
def rope_cos_sin(positions, D, base=10000.0, dtype=np.float32):
    """cos and sin of the rotary angles theta[p, i] = p * base^(-2i / D), i = 0..D/2-1
    (Su et al. 2021, RoFormer). positions: (T,) or (B, T) ints -> cos, sin: (..., D/2).

    The angles are formed in float64 (p * freq reaches 1e4 and more, where float32 keeps only
    three decimals of the angle) and cast to ``dtype`` at the end.
    """
    xp = _xp(positions) if not isinstance(positions, (list, tuple, range)) else np
    pos = xp.asarray(positions).astype(np.float64)
    inv_freq = base ** (-(xp.arange(0, D // 2, dtype=np.float64) * 2.0) / D)  # (D/2,)
    angles = pos[..., None] * inv_freq  # (..., D/2)
    return xp.cos(angles).astype(dtype), xp.sin(angles).astype(dtype)


def _rope_pairs(x, interleaved):
    """The two halves of every rotated pair: (x[2i], x[2i+1]) or (x[i], x[i + D/2])."""
    if interleaved:
        return x[..., 0::2], x[..., 1::2]
    h = x.shape[-1] // 2
    return x[..., :h], x[..., h:]


def _rope_rotate(x, cos, sin, interleaved):
    xp = _xp(x)
    if cos.ndim == 3:  # per-row positions (B, T, D/2): broadcast over the heads
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = _rope_pairs(x, interleaved)
    y = xp.empty_like(x)
    y1, y2 = _rope_pairs(y, interleaved)  # views into y
    y1[...] = x1 * cos - x2 * sin
    y2[...] = x1 * sin + x2 * cos
    return y


@_half_in_float32()
def rope_forward(x, cos, sin, interleaved=False):
    """Rotary position embedding: each pair (x1, x2) of a head is turned by its angle theta,

        y1 = x1 cos(theta) - x2 sin(theta),   y2 = x1 sin(theta) + x2 cos(theta).

    x: (B, H, T, D)  cos, sin: (T, D/2), or (B, T, D/2) when each row has its own positions.
    ``interleaved``: the pairs are adjacent, (x[2i], x[2i+1]), as Meta's checkpoints and GGUF
    files store q and k; otherwise they are the two halves, (x[i], x[i + D/2]), as Hugging Face
    stores them. Both rotate pair i by theta_i; they differ only in which entries form pair i.
    """
    return _rope_rotate(x, cos, sin, interleaved)


@_half_in_float32()
def rope_backward(dy, cos, sin, interleaved=False):
    """dx of rope_forward: a rotation is orthogonal, so its transpose is the rotation by -theta:
    dx1 = dy1 cos + dy2 sin,  dx2 = -dy1 sin + dy2 cos. Needs no saved input."""
    return _rope_rotate(dy, cos, -sin, interleaved)


# --------------------------------------------------------------------------- SwiGLU
def _sigmoid(xp, x):
    """1 / (1 + exp(-x)) without overflow: exp of -|x| only."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@_half_in_float32()
def swiglu_forward(gate, up):
    """y = silu(gate) * up,  silu(g) = g * sigmoid(g)  (Shazeer 2020, GLU variants).

    gate, up: any shape, the same. The Llama MLP's activation: down(silu(gate(x)) * up(x)).
    """
    return gate * _sigmoid(_xp(gate), gate) * up


@_half_in_float32()
def swiglu_backward(dy, gate, up):
    """Returns dgate, dup of y = silu(gate) * up. With s = sigmoid(gate):
    dgate = dy * up * s * (1 + gate * (1 - s)),  dup = dy * gate * s."""
    s = _sigmoid(_xp(gate), gate)
    return dy * up * s * (1.0 + gate * (1.0 - s)), dy * gate * s
# --------------------------------------------------------------------------- quantized matmul
@_half_in_float32()
def qmatmul_forward(x, qw):
    """y = x W^T with W (O, K) held in GGML blocks (a kernels.quant.QuantWeight).

    The definition the quantized kernels must equal: dequantize W, then an ordinary product in
    x's dtype. x: (N, K) -> y: (N, O). (llama.cpp instead rounds x to 8 bits inside the
    product; here activations keep their precision.)
    """
    return x @ _dequantized(qw, x).T


def _dequantized(qw, like):
    """qw's float matrix in ``like``'s dtype, on ``like``'s device (the fallback on CuPy)."""
    w = qw.dequantize().astype(like.dtype, copy=False)
    xp = _xp(like)
    return w if xp is np else xp.asarray(w)


@_half_in_float32()
def qmatmul_q8_forward(x, qw):
    """y = x~ W^T: x rounded to 8 bits before the product, as llama.cpp's CPU kernels do.

    x~ is x in GGML's Q8_0 blocks (kernels/quant.py): each block of 32 values of a row becomes
    d q, d = max |x| / 127 stored as float16, q = round(x / d) in -127..127. Then the product
    with the dequantized W in x's dtype, as qmatmul_forward. x: (N, K) -> y: (N, O), K a
    multiple of 32 (as W's).
    """
    xp = _xp(x)
    host = x if xp is np else x.get()
    xt = dequantize(quantize(host, Q8_0), Q8_0, host.shape).astype(x.dtype)
    return qmatmul_forward(xt if xp is np else xp.asarray(xt), qw)


@_half_in_float32()
def qmatmul_backward_input(dy, qw):
    """dx = dy W for y = x W^T with W frozen in blocks: dy (N, O) -> dx (N, K). No dW: a
    quantized base weight does not train (LoRA adapters beside it do)."""
    return dy @ _dequantized(qw, dy)
