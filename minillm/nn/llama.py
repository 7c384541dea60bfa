"""The layers of a Llama block: RMSNorm, the SwiGLU MLP, grouped-query attention with rotary
position embeddings, and the pre-norm block (Touvron et al. 2023, "LLaMA"; Ainslie et al.
2023, "GQA").

Attention: q_proj makes H query heads, k_proj and v_proj only Hkv <= H key/value heads; each
group of H / Hkv query heads shares one key/value head (H = Hkv is ordinary multi-head
attention, Hkv = 1 multi-query). The key/value heads are repeated to H heads before the fused
attention kernel, and autograd sums the gradients of the copies back into each head. Positions
enter only through the rotation of q and k (RoPE), so the KV cache keeps the rotated keys.

Every projection is a module called as a module (``self.q_proj(x)``), never reached through
its ``.weight``: a LoRALinear or a quantized linear layer (weights kept in GGUF blocks) takes
its place by attribute assignment.

``init=False`` allocates every weight with np.empty (no random draw): the model either draws
its own initial weights (minillm.models.llama) or loads them from a file.
"""

import math

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.errors import ConfigError
from minillm.kernels import registry
from minillm.kernels.reference import rope_cos_sin
from minillm.nn.layers import Linear
from minillm.nn.module import Module, Parameter
from minillm.tensor import Tensor


def _linear(in_features, out_features, init):
    return Linear(in_features, out_features, bias=False, init=init)


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=backend.DEFAULT_DTYPE))

    def forward(self, x):
        return F.rms_norm(x, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LlamaMLP(Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)): C -> F (two projections) -> C, no biases."""

    def __init__(self, n_embd, intermediate_size, init=True):
        super().__init__()
        self.gate_proj = _linear(n_embd, intermediate_size, init)
        self.up_proj = _linear(n_embd, intermediate_size, init)
        self.down_proj = _linear(intermediate_size, n_embd, init)

    def forward(self, x):  # x: (B, T, C)
        h = F.swiglu(self.gate_proj(x), self.up_proj(x))  # (B, T, F)
        return self.down_proj(h)  # (B, T, C)


class LlamaAttention(Module):
    """Causal grouped-query self-attention with rotary embeddings on q and k, no biases.

    q_proj: C -> H*D, k_proj and v_proj: C -> Hkv*D, o_proj: H*D -> C, D = C / H.
    ``rope_interleaved``: q and k rows laid out for adjacent-pair rotation (GGUF / Meta)
    rather than half-split (Hugging Face).
    """

    def __init__(self, n_embd, n_head, n_kv_head=None, rope_theta=10000.0,
                 rope_interleaved=False, init=True):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_embd % n_head or n_head % n_kv_head:
            raise ConfigError(f"attention needs n_embd divisible by n_head and n_head by "
                              f"n_kv_head, got {n_embd}, {n_head}, {n_kv_head}")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = D = n_embd // n_head
        self.rope_theta, self.rope_interleaved = float(rope_theta), bool(rope_interleaved)
        self.q_proj = _linear(n_embd, n_head * D, init)
        self.k_proj = _linear(n_embd, n_kv_head * D, init)
        self.v_proj = _linear(n_embd, n_kv_head * D, init)
        self.o_proj = _linear(n_head * D, n_embd, init)

    def rope_angles(self, positions, dtype=np.float32):
        """cos, sin (..., D/2) for integer ``positions`` (T,) or (B, T)."""
        return rope_cos_sin(positions, self.head_dim, self.rope_theta, dtype=dtype)

    def forward(self, x, kv_cache=None, layer=0, attention_mask=None, position_ids=None,
                rope=None):
        """x: (B, T, C) -> (B, T, C). With ``kv_cache``, x holds only the new positions, which
        start at ``kv_cache.length``. ``attention_mask`` (B, Tk) bool is False at (left)
        padding. ``rope``: (cos, sin) of the positions of x, shared by all layers (the model
        computes them once); else they are computed from ``position_ids`` (T,) or (B, T), by
        default start..start+T-1."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        if rope is None:
            start = kv_cache.length if kv_cache is not None else 0
            pos = np.arange(start, start + T) if position_ids is None else position_ids
            rope = self.rope_angles(pos.data if isinstance(pos, Tensor) else pos, x.dtype)
        cos, sin = rope
        q = self.q_proj(x).reshape(B, T, H, D).permute(0, 2, 1, 3)  # (B, H, T, D)
        k = self.k_proj(x).reshape(B, T, Hkv, D).permute(0, 2, 1, 3)  # (B, Hkv, T, D)
        v = self.v_proj(x).reshape(B, T, Hkv, D).permute(0, 2, 1, 3)  # (B, Hkv, T, D)
        q = F.rope(q, cos, sin, self.rope_interleaved)
        k = F.rope(k, cos, sin, self.rope_interleaved)
        if kv_cache is not None:
            k_all, v_all = kv_cache.append(layer, k.data, v.data)  # (B, Hkv, L+T, D)
            k, v = Tensor(k_all), Tensor(v_all)
        mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            mask = backend.to_numpy(m).astype(bool)[:, None, None, :]  # (B, 1, 1, Tk)
        scale = 1.0 / math.sqrt(D)
        if T == 1 and H > Hkv:
            # A decode step: the one new query of every head sees every key, so the H / Hkv
            # query heads of a group become rows of one query block against their shared
            # key/value head, without causal masking and without copying the cache H / Hkv
            # times. (Head h = j * rep + r is row r of group j.)
            qg = q.reshape(B, Hkv, H // Hkv, D)  # (B, Hkv, rep, D)
            y = F.scaled_dot_product_attention(qg, k, v, causal=False, mask=mask, scale=scale)
            y = y.reshape(B, H, 1, D)  # (B, H, T, D)
        else:
            k, v = self._repeat_kv(k), self._repeat_kv(v)  # (B, H, Tk, D)
            y = F.scaled_dot_product_attention(q, k, v, causal=True, mask=mask,
                                               scale=scale)  # (B, H, T, D)
        y = y.permute(0, 2, 1, 3).reshape(B, T, H * D)  # heads side by side
        return self.o_proj(y)  # (B, T, C)

    def _repeat_kv(self, t):
        """(B, Hkv, Tk, D) -> (B, H, Tk, D): kv head j serves query heads j*rep .. j*rep+rep-1."""
        rep = self.n_head // self.n_kv_head
        if rep == 1:
            return t
        B, Hkv, Tk, D = t.shape
        if not t.requires_grad:  # cached keys/values: a plain array repeat
            xp = backend.array_module(t.data)
            return Tensor(xp.repeat(t.data, rep, axis=1))
        return t.unsqueeze(2).expand(B, Hkv, rep, Tk, D).reshape(B, Hkv * rep, Tk, D)


def _call_array(module, x):
    """``module(x)`` on a plain array, outside the graph: the module's ``forward_array`` where
    it has one (a quantized linear layer), else its forward on a Tensor."""
    f = getattr(module, "forward_array", None)
    return f(x) if f is not None else module(Tensor(x)).data


def _project(layers, fused, x):
    """[layer(x) for layer in layers] on a plain array: one product over their fused weights
    while ``fused`` (an nn.quant.FusedProjections or None) still holds them."""
    if fused is not None and fused.current(layers):
        return fused.forward_array(x)
    return [_call_array(m, x) for m in layers]


def _masked_attention(q, k, v, mask, scale):
    """softmax(q k^T * scale, padding masked) v for q: (B, G, R, D) against k, v: (B, G, Tk, D)
    with ``mask`` (B, Tk) False at padding: the composite scaled_dot_product_attention runs
    for a mask, on arrays."""
    s = np.matmul(q, k.transpose(0, 1, 3, 2)) * np.asarray(scale, q.dtype)  # (B, G, R, Tk)
    s = np.where(np.asarray(mask, bool)[:, None, None, :], s,
                 np.asarray(-1e30 if s.dtype == np.float32 else -1e300, s.dtype))
    s2 = s.reshape(-1, s.shape[-1])
    p = registry.get("softmax_forward", s2)(s2).reshape(s.shape)
    return np.matmul(p, v)  # (B, G, R, D)


def _per_query_head(t, rep):
    """(B, Hkv, Tk, D) keys or values -> (B, Hkv * rep, Tk, D), contiguous: kv head j serves
    query heads j*rep .. j*rep+rep-1."""
    return np.repeat(t, rep, axis=1) if rep > 1 else np.ascontiguousarray(t)


VARLEN_ROWS = 64  # the longest prompt (or shared prefix) packed prompts attend in place with


def _packed_attention(q, k, v, kv_cache, layer, segments, scale, shared=0):
    """Causal attention of prompts packed in one row, each over its own keys: q (1, H, T, D),
    k, v (1, Hkv, T, D) -> (1, T, H, D). The first ``shared`` positions are a prefix every
    prompt begins with, computed once: prompt j's keys are the prefix's, then those of its
    segment, and go to cache row j. Short prompts (a server's questions; up to VARLEN_ROWS
    positions, the prefix too) attend where they lie, in one kernel call
    (attention_varlen_forward). Longer ones attend from those cache rows, prompts of similar
    lengths as one right-padded batch (``_length_groups``) on the blocked kernels; causal
    attention keeps every real query from the padding after it."""
    H, Hkv, D = q.shape[1], k.shape[1], q.shape[3]
    rep = H // Hkv
    ck, cv = kv_cache.k[layer], kv_cache.v[layer]  # (rows, Hkv, max_len, D)
    for j, (s0, s1) in enumerate(segments):  # row j: the prefix's keys, then its own
        for c, t in ((ck, k), (cv, v)):
            c[j, :, :shared] = t[0, :, :shared]
            c[j, :, shared:shared + s1 - s0] = t[0, :, s0:s1]
    lens = [s1 - s0 for s0, s1 in segments]
    if max(lens + [shared]) <= VARLEN_ROWS:
        seqs = ([(0, shared)] if shared else []) + list(segments)  # the prefix sees itself
        prefix = ([0] if shared else []) + [shared] * len(segments)
        y, _ = registry.get("attention_varlen_forward", q)(
            q[0], k[0], v[0], [a for a, _ in seqs], [b for _, b in seqs], prefix, scale)
        return y[None].transpose(0, 2, 1, 3)
    y = np.empty_like(q)
    attend = registry.get("attention_forward", q)
    if shared:
        y[:, :, :shared] = attend(np.ascontiguousarray(q[:, :, :shared]),
                                  _per_query_head(k[:, :, :shared], rep),
                                  _per_query_head(v[:, :, :shared], rep), scale, True)[0]
    for group in _length_groups(lens):
        P = lens[group[0]]  # the longest of the group
        qg = np.zeros((len(group), H, P, D), dtype=q.dtype)  # (n, H, P, D), right-padded
        for i, j in enumerate(group):
            s0, s1 = segments[j]
            qg[i, :, :s1 - s0] = q[0, :, s0:s1]
        rows = np.asarray(group)
        out = attend(qg, _per_query_head(ck[rows, :, :shared + P], rep),
                     _per_query_head(cv[rows, :, :shared + P], rep), scale, True)[0]
        for i, j in enumerate(group):
            s0, s1 = segments[j]
            y[0, :, s0:s1] = out[i, :, :s1 - s0]
    return y.transpose(0, 2, 1, 3)


PAD_WASTE = 1.25  # a padded group of prompts holds at most this many times their own positions


def _length_groups(lens):
    """Indices of the prompts of lengths ``lens`` in groups, longest first, such that each
    group's count times its longest length stays within PAD_WASTE of its lengths' sum (one
    long prompt among short ones attends alone instead of padding the others to its
    length)."""
    order = sorted(range(len(lens)), key=lambda j: -lens[j])
    groups, group, total = [], [], 0
    for j in order:
        if group and (len(group) + 1) * lens[group[0]] > PAD_WASTE * (total + lens[j]):
            groups.append(group)
            group, total = [], 0
        group.append(j)
        total += lens[j]
    return groups + [group] if group else groups


def _rms_array(norm, x):
    x2 = x.reshape(-1, x.shape[-1])  # (N, C)
    return registry.get("rms_norm_forward", x2)(x2, norm.weight.data, norm.eps)[0].reshape(x.shape)


class LlamaBlock(Module):
    """Pre-norm Llama block: x + self_attn(input_layernorm(x)), then
    x + mlp(post_attention_layernorm(x)).

    ``step`` is the same block for new positions going into a KV cache, on plain arrays and
    without building a graph: what a prompt's prefill and then decoding, token after token, run
    (where the Tensor ops' own bookkeeping would cost more than the kernels), with q, k, v and
    gate, up as one product each where fused (tests/models/test_llama.py holds it to
    ``forward``).
    """

    def step(self, x, kv_cache, layer, rope, mask=None, segments=None, lengths=None, shared=0,
             keep=None):
        """x: (B, T, C) array of the new positions of each row, ``rope`` their (cos, sin); the
        cache receives their keys and values -> (B, T, C) array. ``mask`` (B, Tk) bool, False
        where a row's keys are padding (rows of different lengths decoded together; T = 1
        only); or ``lengths`` (B,): row b sees keys 0..lengths[b]-1, a mask whose rows are
        prefixes (the server's ragged cache; T = 1 only). ``segments``: [(start, end)] of
        prompts packed end to end in one row (B = 1, no padding), after a prefix of ``shared``
        positions they all begin with; prompt j attends to the prefix and itself, and the
        keys and values of both fill the (empty) cache's row j from position 0. ``keep``:
        the positions (indices into T, B = 1) whose outputs are wanted; the rest get their keys
        and values cached, but no output projection or MLP -> (1, len(keep), C) (a prefill's
        last layer, where only each prompt's last position goes on to the head)."""
        a = self.self_attn
        B, T, C = x.shape
        H, Hkv, D = a.n_head, a.n_kv_head, a.head_dim
        if (mask is not None or lengths is not None) and T > 1:
            raise ValueError("LlamaBlock.step takes a padding mask only for one new position")
        if segments is not None and (B != 1 or mask is not None):
            raise ValueError("packed prompts come as one row, without a mask")
        cos, sin = rope
        h = _rms_array(self.input_layernorm, x)
        q, k, v = _project((a.q_proj, a.k_proj, a.v_proj), self.__dict__.get("fused_qkv"), h)
        # (B, T, n * D) -> (B, n, T, D), copied: the kernels take contiguous heads, and q, k, v
        # may be column slices of one fused product (a reshape when T = 1)
        q = np.ascontiguousarray(q.reshape(B, T, H, D).transpose(0, 2, 1, 3))
        k = np.ascontiguousarray(k.reshape(B, T, Hkv, D).transpose(0, 2, 1, 3))
        v = np.ascontiguousarray(v.reshape(B, T, Hkv, D).transpose(0, 2, 1, 3))
        rope_fwd = registry.get("rope_forward", q)
        q = rope_fwd(q, cos, sin, a.rope_interleaved)
        k = rope_fwd(k, cos, sin, a.rope_interleaved)
        scale = 1.0 / math.sqrt(D)
        if segments is not None:  # packed prompts, each over its own keys
            y = _packed_attention(q, k, v, kv_cache, layer, segments, scale, shared)
        elif T > 1:  # a prompt: causal, each query head against its group's keys, as forward
            k_all, v_all = kv_cache.append(layer, k, v)  # (B, Hkv, L + T, D)
            k_all, v_all = _per_query_head(k_all, H // Hkv), _per_query_head(v_all, H // Hkv)
            y, _ = registry.get("attention_forward", q)(q, k_all, v_all, scale, True)
            y = y.transpose(0, 2, 1, 3)  # (B, T, H, D)
        else:  # the query heads of a group as rows, as forward
            k_all, v_all = kv_cache.append(layer, k, v)  # (B, Hkv, L + 1, D)
            q = q.reshape(B, Hkv, H // Hkv, D)
            if lengths is not None:
                y, _ = registry.get("attention_ragged_forward", q)(q, k_all, v_all, lengths,
                                                                   scale)
            elif mask is None:
                y, _ = registry.get("attention_forward", q)(q, k_all, v_all, scale, H == Hkv)
            else:
                y = _masked_attention(q, k_all, v_all, mask, scale)
        if keep is not None:  # (B, T, ...) -> (B, len(keep), ...)
            y, x = y[:, keep], x[:, keep]
            T = len(keep)
        x = x + _call_array(a.o_proj, np.ascontiguousarray(y).reshape(B, T, H * D))
        h = _rms_array(self.post_attention_layernorm, x)
        m = self.mlp
        g, u = _project((m.gate_proj, m.up_proj), self.__dict__.get("fused_gate_up"), h)
        g, u = np.ascontiguousarray(g), np.ascontiguousarray(u)
        return x + _call_array(m.down_proj, registry.get("swiglu_forward", g)(g, u))

    def fuse_projections(self):
        """Lay the quantized q, k, v weights end to end, and gate and up, so that a decoding
        step computes each set in one product (nn.quant.FusedProjections); no-op for float
        or mixed layers. Returns True if it fused anything."""
        from minillm.nn.quant import FusedProjections

        a, m = self.self_attn, self.mlp
        qkv = FusedProjections.fuse((a.q_proj, a.k_proj, a.v_proj))
        gate_up = FusedProjections.fuse((m.gate_proj, m.up_proj))
        object.__setattr__(self, "fused_qkv", qkv)  # plain attributes, not submodules
        object.__setattr__(self, "fused_gate_up", gate_up)
        return qkv is not None or gate_up is not None

    def __init__(self, n_embd, n_head, n_kv_head, intermediate_size, rms_norm_eps=1e-5,
                 rope_theta=10000.0, rope_interleaved=False, init=True):
        super().__init__()
        self.input_layernorm = RMSNorm(n_embd, rms_norm_eps)
        self.self_attn = LlamaAttention(n_embd, n_head, n_kv_head, rope_theta, rope_interleaved,
                                        init=init)
        self.post_attention_layernorm = RMSNorm(n_embd, rms_norm_eps)
        self.mlp = LlamaMLP(n_embd, intermediate_size, init=init)

    def forward(self, x, kv_cache=None, layer=0, attention_mask=None, position_ids=None,
                rope=None):
        x = x + self.self_attn(self.input_layernorm(x), kv_cache=kv_cache, layer=layer,
                               attention_mask=attention_mask, position_ids=position_ids,
                               rope=rope)
        return x + self.mlp(self.post_attention_layernorm(x))
