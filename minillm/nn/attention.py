"""Causal multi-head self-attention, the pre-LayerNorm transformer Block, and the KV cache.

Attention (Vaswani et al. 2017): q, k, v come from one fused projection c_attn (C -> 3C), are
split into H heads of size D = C / H, and each head computes softmax(q k^T / sqrt(D)) v over the
positions it may see (causal: itself and earlier ones). Heads are concatenated and projected
back by c_proj (C -> C).

KV cache: when generating, the keys and values of earlier positions do not change, so a decode
step computes q, k, v only for the new token(s), appends k and v to the cache and attends over
everything cached: one position of attention per new token instead of re-running the prefix.
"""

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.kernels.reference import causal_mask
from minillm.nn.layers import MLP, Dropout, LayerNorm, Linear
from minillm.nn.module import Module
from minillm.tensor import Tensor


class KVCache:
    """Keys and values of every layer for positions 0..length-1, preallocated to ``max_len``.

    k[layer], v[layer]: (B, H, max_len, D) arrays. ``length`` counts the filled positions and is
    advanced by the model after all layers have appended the same number of new positions.
    Inference only (the arrays are outside the autograd graph).
    """

    def __init__(self, n_layer, batch_size, n_head, head_dim, max_len, dtype=np.float32, like=None):
        xp = backend.array_module(like) if like is not None else np
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [xp.zeros(shape, dtype=dtype) for _ in range(n_layer)]
        self.v = [xp.zeros(shape, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0

    def append(self, layer, k, v):
        """Store new k, v (B, H, T, D) after the filled part; return all of it (B, H, L+T, D)."""
        T = k.shape[2]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} requested")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, T):
        self.length += T

    def reset(self):
        self.length = 0


class CausalSelfAttention(Module):
    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, init=True):
        super().__init__()
        if n_embd % n_head:
            from minillm.errors import ConfigError

            raise ConfigError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head, self.n_embd, self.dropout_p = n_head, n_embd, dropout
        self.c_attn = Linear(n_embd, 3 * n_embd, bias=bias, init=init)  # fused q, k, v projection
        self.c_proj = Linear(n_embd, n_embd, bias=bias, init=init)
        self.resid_dropout = Dropout(dropout)

    def forward(self, x, kv_cache=None, layer=0, attention_mask=None):
        """x: (B, T, C). ``attention_mask``: (B, Tk) bool, False at padding positions (batched
        generation with left padding). With ``kv_cache``, x holds only the new positions."""
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        attn_drop = self.dropout_p if self.training else 0.0
        if kv_cache is None and attention_mask is None and attn_drop == 0.0:
            y = F.self_attention(self.c_attn(x), H, causal=True)  # fused kernel, (B, T, C)
            return self.resid_dropout(self.c_proj(y))
        qkv = self.c_attn(x).reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, H, T, D)
        if kv_cache is not None:
            k_all, v_all = kv_cache.append(layer, k.data, v.data)  # (B, H, L+T, D)
            k, v = Tensor(k_all), Tensor(v_all)
        if attention_mask is None and attn_drop == 0.0:
            y = F.scaled_dot_product_attention(q, k, v, causal=True)  # fused kernel, (B, H, T, D)
        else:
            y = self._attention_composite(q, k, v, attention_mask, attn_drop)
        y = y.permute(0, 2, 1, 3).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _attention_composite(q, k, v, attention_mask, p_drop):
        """The unfused path: explicit (T, T) probabilities, for dropout on the attention
        weights (as GPT-2 and nanoGPT train) and for padding masks."""
        Tq, Tk = q.shape[2], k.shape[2]
        allowed = causal_mask(np, Tq, Tk)  # (Tq, Tk)
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            allowed = allowed[None, None] & backend.to_numpy(m)[:, None, None, :]  # (B, 1, Tq, Tk)
        if backend.is_cupy(q.data):
            allowed = backend.to_device(allowed, "cuda")
        s = (q @ k.transpose(-1, -2)) * (1.0 / np.sqrt(q.shape[-1]))  # (B, H, Tq, Tk)
        s = s.masked_fill(~allowed, -1e30 if s.dtype == np.float32 else -1e300)
        p = F.dropout(F.softmax(s, -1), p_drop, training=p_drop > 0)
        return p @ v  # (B, H, Tq, D)


class Block(Module):
    """Pre-LayerNorm transformer block (GPT-2): x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, init=True):
        """``init=False`` allocates the weights without drawing them (about to be loaded)."""
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias=bias, dropout=dropout, init=init)
        self.ln_2 = LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias=bias, dropout=dropout, init=init)

    def forward(self, x, kv_cache=None, layer=0, attention_mask=None):
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache, layer=layer, attention_mask=attention_mask)
        return x + self.mlp(self.ln_2(x))
