"""Plain-array reference kernels: the readable definition of every hot op, forward and backward.

Every function takes arrays (NumPy or CuPy: the array module is read off the input, so the same
code is the CPU ground truth and the GPU fallback) and returns new arrays. Nothing here knows
about Tensor or autograd. The fast versions in ``kernels/cpu`` (Numba) and ``kernels/cuda``
(CUDA C) compute the same functions and are tested against these, forward and backward.

Shape letters: N rows (B*T flattened), C channels, V vocabulary, B batch, H heads,
T / Tq / Tk sequence lengths, D head size.
"""

import math

import numpy as np

GELU_K = math.sqrt(2.0 / math.pi)  # GELU tanh approximation (Hendrycks & Gimpel), as GPT-2 uses
GELU_A = 0.044715


def _xp(a):
    """The array module of ``a`` (numpy or cupy) without importing cupy."""
    return np if isinstance(a, np.ndarray) else __import__(type(a).__module__.split(".")[0])


# --------------------------------------------------------------------------- matmul
def matmul(a, b):
    """out = a @ b, batch dims broadcast. The BLAS call is the reference and the default."""
    return a @ b


# --------------------------------------------------------------------------- softmax
def softmax_forward(x):
    """y = exp(x - max) / sum(exp(x - max)) over the last axis.  x, y: (..., V)"""
    xp = _xp(x)
    z = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y)) over the last axis (the Jacobian is diag(y) - y y^T)."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """y = x - logsumexp(x) over the last axis.  x, y: (..., V)"""
    xp = _xp(x)
    m = x.max(axis=-1, keepdims=True)
    lse = m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))
    return x - lse


def log_softmax_backward(dy, y):
    """dx = dy - softmax(x) * sum(dy), with softmax(x) = exp(y)."""
    xp = _xp(y)
    return dy - xp.exp(y) * dy.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- cross-entropy
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
    count = int(valid.sum())
    loss = nll.sum() / max(count, 1)
    return xp.asarray(loss, dtype=logits.dtype), lse


def cross_entropy_backward(dloss, logits, lse, targets, ignore_index=-100):
    """dlogits = dloss * (softmax(logits) - onehot(targets)) / count; ignored rows get 0."""
    xp = _xp(logits)
    valid = targets != ignore_index
    count = max(int(valid.sum()), 1)
    p = xp.exp(logits - lse[:, None])  # (N, V)
    rows = xp.arange(logits.shape[0])
    p[rows, xp.where(valid, targets, 0)] -= 1.0
    p *= (valid[:, None] * (float(dloss) / count)).astype(logits.dtype)
    return p


# --------------------------------------------------------------------------- layer norm
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
def gelu_forward(x):
    """y = 0.5 x (1 + tanh(k (x + a x^3))), k = sqrt(2/pi), a = 0.044715 (GPT-2's GELU)."""
    xp = _xp(x)
    return 0.5 * x * (1.0 + xp.tanh(GELU_K * (x + GELU_A * x * x * x)))


def gelu_backward(dy, x):
    """dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2), t = tanh(k (x + a x^3))."""
    xp = _xp(x)
    t = xp.tanh(GELU_K * (x + GELU_A * x * x * x))
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_A * x * x))


def bias_gelu_forward(x, b):
    """y = gelu(x + b).  x: (N, C)  b: (C,)  (the MLP's first Linear epilogue)."""
    return gelu_forward(x + b)


def bias_gelu_backward(dy, x, b):
    """Returns dx (N, C) and db (C,) of y = gelu(x + b)."""
    dx = gelu_backward(dy, x + b)
    return dx, dx.sum(axis=0)


# --------------------------------------------------------------------------- attention
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
