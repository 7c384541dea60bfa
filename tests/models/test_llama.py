"""minillm.models.Llama: the forward pass against an independent NumPy implementation written
here (complex-number rotary embeddings, explicit per-head grouped-query attention), the GGUF
row permutation between the two rotary layouts, the KV cache against the full forward at every
step, a float64 gradient check, training with AdamW, generation, and init=False."""

import numpy as np
import pytest

import minillm as M
from minillm import backend
from minillm import sample as S
from minillm.chat import TranscriptChat
from minillm.errors import ConfigError
from minillm.models import Llama, LlamaConfig
from minillm.optim import AdamW
from minillm.testing import gradcheck
from minillm.tokenizers import CharTokenizer

TINY = dict(vocab_size=61, block_size=32, n_layer=2, n_head=6, n_kv_head=2, n_embd=48,
            intermediate_size=80, rope_theta=500.0)


def make(seed=0, std=0.3, **overrides):
    """A tiny random Llama with weights large enough that attention and the norms matter."""
    cfg = LlamaConfig(**{**TINY, **overrides})
    m = Llama(cfg, init=False)
    rng = np.random.default_rng(seed)
    for p in m.parameters():
        if p.ndim == 1:  # norm gains around 1
            p.data = (1 + 0.2 * rng.standard_normal(p.shape)).astype(np.float32)
        else:
            p.data = (rng.standard_normal(p.shape) * std).astype(np.float32)
    return m


def weights(m):
    return {n: p.data.astype(np.float64) for n, p in m.named_parameters()}


# --------------------------------------------------------------------------- the oracle
def np_rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def np_rope(x, pos, theta, interleaved):
    """x: (B, T, n, D) rotated as complex numbers: pair i of position p times exp(i p f_i)."""
    D = x.shape[-1]
    f = theta ** (-np.arange(0, D, 2) / D)  # (D/2,)
    rot = np.exp(1j * pos[:, None] * f)[None, :, None, :]  # (1, T, 1, D/2)
    if interleaved:
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * rot
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
        return out
    z = (x[..., : D // 2] + 1j * x[..., D // 2:]) * rot
    return np.concatenate([z.real, z.imag], axis=-1)


def np_llama(W, cfg, idx, targets=None):
    """Logits (B, T, V) and mean cross-entropy, float64, from the weight dict W."""
    B, T = idx.shape
    H, Hkv, C = cfg.n_head, cfg.n_kv_head, cfg.n_embd
    D = C // H
    pos = np.arange(T, dtype=np.float64)
    x = W["embed_tokens.weight"][idx]  # (B, T, C)
    for i in range(cfg.n_layer):
        p = f"layers.{i}."
        h = np_rms(x, W[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(B, T, H, D)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(B, T, Hkv, D)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(B, T, Hkv, D)
        q = np_rope(q, pos, cfg.rope_theta, cfg.rope_interleaved)
        k = np_rope(k, pos, cfg.rope_theta, cfg.rope_interleaved)
        o = np.zeros((B, T, H, D))
        for hh in range(H):
            j = hh // (H // Hkv)  # the key/value head of query head hh
            for b in range(B):
                for t in range(T):
                    s = k[b, : t + 1, j] @ q[b, t, hh] / np.sqrt(D)  # (t+1,)
                    a = np.exp(s - s.max())
                    o[b, t, hh] = (a / a.sum()) @ v[b, : t + 1, j]
        x = x + o.reshape(B, T, C) @ W[p + "self_attn.o_proj.weight"].T
        h = np_rms(x, W[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = np_rms(x, W["norm.weight"], cfg.rms_norm_eps)
    head = W["embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"]
    logits = x @ head.T
    if targets is None:
        return logits, None
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return logits, -np.take_along_axis(logp, targets[..., None], -1).mean()


# --------------------------------------------------------------------------- (a) forward
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("interleaved", [False, True], ids=["halves", "pairs"])
def test_forward_matches_numpy_oracle(interleaved, tied):
    m = make(rope_interleaved=interleaved, tie_word_embeddings=tied)
    names = [n for n, _ in m.named_parameters()]
    assert ("lm_head.weight" in names) is not tied
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 61, (2, 9))
    tgt = rng.integers(0, 61, (2, 9))
    logits, loss = m(idx, targets=tgt)
    want, want_loss = np_llama(weights(m), m.config, idx, tgt)
    assert logits.shape == (2, 9, 61) and logits.dtype == np.float32
    np.testing.assert_allclose(logits.data, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert abs(loss.item() - want_loss) < 1e-4 * want_loss


def test_parameter_names_and_shapes():
    m = make(tie_word_embeddings=False)
    shapes = {n: p.shape for n, p in m.named_parameters()}
    C, F, V, D = 48, 80, 61, 8
    want = {"embed_tokens.weight": (V, C), "norm.weight": (C,), "lm_head.weight": (V, C)}
    for i in range(2):
        p = f"layers.{i}."
        want.update({
            p + "input_layernorm.weight": (C,), p + "post_attention_layernorm.weight": (C,),
            p + "self_attn.q_proj.weight": (6 * D, C), p + "self_attn.k_proj.weight": (2 * D, C),
            p + "self_attn.v_proj.weight": (2 * D, C), p + "self_attn.o_proj.weight": (C, 6 * D),
            p + "mlp.gate_proj.weight": (F, C), p + "mlp.up_proj.weight": (F, C),
            p + "mlp.down_proj.weight": (C, F)})
    assert shapes == want
    assert m.num_parameters() == sum(int(np.prod(s)) for s in want.values())


# --------------------------------------------------------------------------- (b) GGUF layout
def gguf_rows(w_hf, n_head):
    """HF rows -> GGUF rows (the inverse of the importer's un-permutation)."""
    n_out, n_in = w_hf.shape
    hd = n_out // n_head
    return w_hf.reshape(n_head, 2, hd // 2, n_in).swapaxes(1, 2).reshape(n_out, n_in)


def hf_rows(w_gguf, n_head):
    """GGUF rows -> HF rows, as an importer un-permutes q_proj and k_proj."""
    n_out, n_in = w_gguf.shape
    hd = n_out // n_head
    return w_gguf.reshape(n_head, hd // 2, 2, n_in).swapaxes(1, 2).reshape(n_out, n_in)


def test_interleaved_with_gguf_rows_equals_half_split():
    hf = make(seed=3)
    pairs = make(seed=3, rope_interleaved=True)
    for i, layer in enumerate(pairs.layers):
        a = layer.self_attn
        for proj, n in ((a.q_proj, 6), (a.k_proj, 2)):
            w_hf = getattr(hf.layers[i].self_attn, proj is a.q_proj and "q_proj" or "k_proj")
            proj.weight.data = gguf_rows(w_hf.weight.data, n).copy()
            np.testing.assert_array_equal(hf_rows(proj.weight.data, n), w_hf.weight.data)
    idx = np.random.default_rng(2).integers(0, 61, (2, 11))
    np.testing.assert_allclose(pairs(idx)[0].data, hf(idx)[0].data, rtol=1e-5, atol=1e-5)
    assert not np.allclose(make(seed=3, rope_interleaved=True)(idx)[0].data, hf(idx)[0].data,
                           atol=1e-3)  # without the permutation the layouts differ


# --------------------------------------------------------------------------- (c) KV cache
@pytest.mark.parametrize("interleaved", [False, True], ids=["halves", "pairs"])
def test_kv_cache_matches_full_forward_at_every_step(interleaved):
    m = make(seed=4, rope_interleaved=interleaved).eval()
    idx = np.random.default_rng(5).integers(0, 61, (2, 14))
    with M.no_grad():
        full = m(idx)[0].data  # (B, T, V)
        cache = m.new_kv_cache(2, max_len=16)
        assert cache.k[0].shape == (2, 2, 16, 8)  # n_kv_head heads, not n_head
        got = [m(idx[:, :4], kv_cache=cache)[0].data,  # prompt prefilled in two chunks
               m(idx[:, 4:7], kv_cache=cache)[0].data]
        for t in range(7, 14):  # then one token per step
            got.append(m(idx[:, t:t + 1], kv_cache=cache)[0].data)
        assert cache.length == 14
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, rtol=1e-5, atol=1e-5)
    with M.no_grad():
        last = m(idx, last_only=True)[0].data
    np.testing.assert_allclose(last[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True], ids=["plain", "left-padded"])
def test_chunked_prefill_equals_one_pass(padded, monkeypatch):
    # a prompt longer than prefill_chunk fills the cache a chunk at a time, each chunk
    # attending to the ones before it: the logits and the cache are one pass's
    m = make(seed=10).eval()
    ids = np.random.default_rng(11).integers(0, 61, (2, 11))
    mask = pos = None
    if padded:  # row 1 left-padded with 4 tokens
        mask = np.ones((2, 11), bool)
        mask[1, :4] = False
        pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    trunk, runs = m.trunk, {}
    for chunk in (None, 4):
        m.prefill_chunk, lengths = chunk, []
        monkeypatch.setattr(m, "trunk", lambda idx, *a: lengths.append(idx.shape[1])
                            or trunk(idx, *a))
        with M.no_grad():
            cache, cache_last = m.new_kv_cache(2, max_len=12), m.new_kv_cache(2, max_len=12)
            full = m(ids, kv_cache=cache, attention_mask=mask, position_ids=pos)[0].data
            last = m(ids, kv_cache=cache_last, attention_mask=mask, position_ids=pos,
                     last_only=True)[0].data
        assert cache.length == cache_last.length == 11 and full.shape == (2, 11, 61)
        np.testing.assert_allclose(last[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)
        runs[chunk] = full, cache, lengths
    assert runs[None][2] == [11, 11] and runs[4][2] == [4, 4, 3] * 2
    real = np.ones((2, 11), bool) if mask is None else mask  # padding's outputs mean nothing
    np.testing.assert_allclose(runs[4][0][real], runs[None][0][real], rtol=1e-5, atol=1e-5)
    for a, b in zip(runs[4][1].k + runs[4][1].v, runs[None][1].k + runs[None][1].v):
        a, b = a[:, :, :11].transpose(0, 2, 1, 3), b[:, :, :11].transpose(0, 2, 1, 3)
        np.testing.assert_allclose(a[real], b[real], rtol=1e-5, atol=1e-5)  # (B, T, H, D)
    with M.no_grad():  # short prompts, a graph, or no cache: one pass, as before
        m(ids[:, :4], kv_cache=m.new_kv_cache(2, max_len=12))
        m(ids)
    assert runs[4][2][6:] == [4, 11]


@pytest.mark.parametrize("varlen", [True, False], ids=["in-place", "padded-groups"])
@pytest.mark.parametrize("shared", [0, 6], ids=["distinct", "shared-prefix"])
@pytest.mark.parametrize("quantized", [False, True], ids=["float32", "q8_0"])
def test_packed_prompts_equal_each_prompt_alone(quantized, shared, varlen, monkeypatch):
    # prompts end to end in one row, each attending to itself (and the prefix they all begin
    # with, computed once): each one's last hidden state and cache row are what it gets alone,
    # whether they attend where they lie (short prompts) or as padded groups (long ones)
    import minillm.nn.llama as L
    from minillm.kernels import registry
    from minillm.nn.quant import quantize_linears

    monkeypatch.setattr(L, "VARLEN_ROWS", 64 if varlen else 0)
    called = []
    get = registry.get
    monkeypatch.setattr(registry, "get", lambda op, like=None: called.append(op) or get(op, like))
    m = make(seed=12, n_embd=96, intermediate_size=64).eval()
    if quantized:
        quantize_linears(m, "q8_0")
        assert all(b.fuse_projections() for b in m.layers)
    rng = np.random.default_rng(13)
    prefix = rng.integers(0, 61, shared).tolist()
    prompts = [rng.integers(0, 61, n).tolist() for n in (5, 1, 9, 3)]
    prompts = [[60] + p for p in prompts] if not shared else [prefix + p for p in prompts]
    if shared:  # one prompt is the prefix and one more token: that token stays its own
        prompts.append(prefix + [7])
    rows, width = len(prompts), max(map(len, prompts))
    step, fed, kept = type(m.layers[0]).step, [], []
    monkeypatch.setattr(type(m.layers[0]), "step",
                        lambda self, x, *a, **k: fed.append(x.shape[1]) or
                        kept.append(k.get("keep")) or step(self, x, *a, **k))
    cache = m.new_kv_cache(rows, max_len=width)
    h = m.prefill_packed(prompts, cache).data  # (rows, 1, C)
    monkeypatch.undo()
    assert ("attention_varlen_forward" in called) == varlen
    assert ("attention_forward" in called) == (not varlen)
    assert h.shape == (rows, 1, m.config.n_embd)
    # the packed row: every prompt's own positions, the shared ones once ([60] is shared too,
    # up to each prompt keeping one position: the 1-token rest)
    own = sum(len(p) for p in prompts) - (rows - 1) * (shared or 1)
    assert fed == [own] * m.config.n_layer
    # the last layer's projection and MLP run for each prompt's last position only
    assert kept[:-1] == [None] * (m.config.n_layer - 1) and len(kept[-1]) == rows
    for j, p in enumerate(prompts):
        alone = m.new_kv_cache(1, max_len=width)
        with M.no_grad():
            want = m(np.asarray([p]), kv_cache=alone, return_hidden=True).data[0, -1]
        # (18 packed rows and 9 alone take different qmatmul rungs: float32 rounding apart)
        np.testing.assert_allclose(h[j, 0], want, rtol=1e-4, atol=1e-4)
        for a, b in zip(cache.k + cache.v, alone.k + alone.v):
            np.testing.assert_allclose(a[j, :, :len(p)], b[0, :, :len(p)], rtol=1e-4,
                                       atol=1e-4)
    with pytest.raises(ConfigError, match="non-empty prompts"):
        m.prefill_packed([[1, 2], []], m.new_kv_cache(2, max_len=9))
    with pytest.raises(ConfigError, match="does not fit"):
        m.prefill_packed([[1] * 10], m.new_kv_cache(1, max_len=9))


def test_packed_prompts_attend_in_groups_of_similar_length():
    # a server's short prompts attend as one padded batch; a long one among them alone
    from minillm.nn.llama import PAD_WASTE, _length_groups

    assert _length_groups([8, 7, 9, 7, 8, 6, 7, 8]) == [[2, 0, 4, 7, 1, 3, 6, 5]]
    assert _length_groups([5, 300, 6, 4]) == [[1], [2, 0, 3]]
    assert _length_groups([10, 6, 4, 2]) == [[0, 1], [2], [3]]  # the packed test's prompts
    for lens in ([3], [1, 1], [50, 40, 30, 20, 10, 1], list(range(1, 30))):
        groups = _length_groups(lens)
        assert sorted(j for g in groups for j in g) == list(range(len(lens)))
        for g in groups:
            assert len(g) * max(lens[j] for j in g) <= PAD_WASTE * sum(lens[j] for j in g)


@pytest.mark.parametrize("kv_heads", [2, 6], ids=["gqa", "mha"])
@pytest.mark.parametrize("quantized", [False, True], ids=["float32", "q8_0"])
def test_decoding_step_on_arrays_equals_the_graph_path(kv_heads, quantized):
    # without grad, a prompt and then one new token at a time run LlamaBlock.step (plain
    # arrays); with grad on, the same tokens run the Tensor ops: the same numbers
    from minillm.nn.quant import quantize_linears

    m = make(seed=8, n_kv_head=kv_heads, n_embd=96, intermediate_size=64).eval()
    if quantized:  # every matrix Q8_0 in row groups; q, k, v and gate, up fused for decoding
        assert len(quantize_linears(m, "q8_0")) == 2 * 7
        assert all(b.fuse_projections() for b in m.layers)
        qkv = m.layers[0].fused_qkv
        assert qkv.weight.shape == (96 + 2 * 16 * kv_heads, 96)
        assert np.shares_memory(m.layers[0].self_attn.k_proj.weight.blocks, qkv.weight.blocks)
    idx = np.random.default_rng(9).integers(0, 61, (2, 9))
    calls = []
    step = type(m.layers[0]).step

    def counting(self, *a, **k):
        calls.append(1)
        return step(self, *a, **k)

    fast_cache, slow_cache = m.new_kv_cache(2, max_len=12), m.new_kv_cache(2, max_len=12)
    type(m.layers[0]).step = counting
    try:
        with M.no_grad():
            fast = m(idx[:, :5], kv_cache=fast_cache)[0].data
        np.testing.assert_array_equal(fast, m(idx[:, :5], kv_cache=slow_cache)[0].data)
        for t in range(5, 9):
            with M.no_grad():
                fast = m(idx[:, t:t + 1], kv_cache=fast_cache)[0].data
            slow = m(idx[:, t:t + 1], kv_cache=slow_cache)[0].data
            np.testing.assert_array_equal(fast, slow)
    finally:
        type(m.layers[0]).step = step
    assert len(calls) == 5 * 2  # the prompt and every decoding step: both blocks' step
    np.testing.assert_array_equal(fast_cache.k[1], slow_cache.k[1])
    if quantized:  # a LoRA wrapper in place of q_proj ends the fusion: the layers run alone
        from minillm.nn.lora import apply_lora

        apply_lora(m, rank=2, targets=("q_proj",))
        assert not m.layers[0].fused_qkv.current(
            (m.layers[0].self_attn.q_proj, m.layers[0].self_attn.k_proj,
             m.layers[0].self_attn.v_proj))
        with M.no_grad():
            fast = m(idx[:, 8:9], kv_cache=fast_cache)[0].data
        slow = m(idx[:, 8:9], kv_cache=slow_cache)[0].data
        np.testing.assert_array_equal(fast, slow)


def test_masked_decoding_step_equals_the_graph_path():
    # rows of different lengths decoded together (left padding, per-row positions): the array
    # step's masked attention against the Tensor ops' composite
    m = make(seed=10).eval()
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 61, (2, 7))
    mask = np.ones((2, 12), bool)
    mask[1, :3] = False  # row 1 is 3 tokens shorter, left-padded
    pos = np.maximum(np.cumsum(mask[:, :7], axis=1) - 1, 0)
    caches = m.new_kv_cache(2, max_len=12), m.new_kv_cache(2, max_len=12)
    with M.no_grad():
        m(ids, kv_cache=caches[0], attention_mask=mask[:, :7], position_ids=pos)
    m(ids, kv_cache=caches[1], attention_mask=mask[:, :7], position_ids=pos)
    for t in range(7, 11):
        new = rng.integers(0, 61, (2, 1))
        p = np.maximum(np.cumsum(mask[:, :t + 1], axis=1)[:, -1:] - 1, 0)
        with M.no_grad():
            fast = m(new, kv_cache=caches[0], attention_mask=mask[:, :t + 1], position_ids=p)[0]
        slow = m(new, kv_cache=caches[1], attention_mask=mask[:, :t + 1], position_ids=p)[0]
        np.testing.assert_allclose(fast.data, slow.data, rtol=1e-5, atol=1e-6)


def test_left_padding_with_positions_matches_each_row_alone():
    m = make(seed=6).eval()
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 61, 9), rng.integers(0, 61, 5)
    ids = np.stack([a, np.r_[np.zeros(4, np.int64), b]])  # b left-padded with 4 tokens
    mask = np.stack([np.ones(9, bool), np.r_[np.zeros(4, bool), np.ones(5, bool)]])
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with M.no_grad():
        both = m(ids, attention_mask=mask, position_ids=pos)[0].data
        alone_a, alone_b = m(a[None])[0].data, m(b[None])[0].data
    np.testing.assert_allclose(both[0], alone_a[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both[1, 4:], alone_b[0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- (d) gradients
def test_loss_gradcheck_float64(reference_kernels):
    m = make(seed=8, std=0.5, tie_word_embeddings=False)
    for p in m.parameters():
        p.data = p.data.astype(np.float64)
    rng = np.random.default_rng(9)
    idx, tgt = rng.integers(0, 61, (2, 6)), rng.integers(0, 61, (2, 6))
    L = m.layers[1]
    checked = [L.self_attn.q_proj.weight, L.self_attn.k_proj.weight, L.self_attn.v_proj.weight,
               L.mlp.gate_proj.weight, L.input_layernorm.weight, m.embed_tokens.weight,
               m.norm.weight]
    err = gradcheck(lambda *ps: m(idx, targets=tgt)[1], *checked, max_checks=12)
    assert err <= 1e-6


# --------------------------------------------------------------------------- (e) training
def test_adamw_steps_lower_the_loss():
    M.manual_seed(0)
    m = Llama(LlamaConfig(**TINY))
    rng = np.random.default_rng(10)
    idx = rng.integers(0, 61, (4, 12))
    tgt = np.roll(idx, -1, axis=1)
    opt = AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        _, loss = m(idx, targets=tgt)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(losses[0] - np.log(61)) < 0.3  # a fresh model is close to uniform
    assert losses[-1] < losses[0] - 0.5


# --------------------------------------------------------------------------- (f) generation
CORPUS = "hello world, the quick brown fox jumps over the lazy dog!\nUser: Assistant:\n"


def test_generate_with_a_char_tokenizer():
    tok = CharTokenizer.from_text(CORPUS)
    m = make(seed=11, std=0.5, vocab_size=tok.vocab_size, block_size=16).eval()
    cached = S.generate(m, tok, "the quick", max_new_tokens=20, greedy=True)
    plain = S.generate(m, tok, "the quick", max_new_tokens=20, greedy=True, use_cache=False)
    assert cached == plain and len(cached) > 0  # 9 + 20 tokens: the window slides past 16
    batch = S.generate(m, tok, ["the quick", "hello"], max_new_tokens=6, greedy=True)
    assert batch[1] == S.generate(m, tok, "hello", max_new_tokens=6, greedy=True)
    chat = TranscriptChat(m, tok, max_new_tokens=5, greedy=True)
    assert isinstance("".join(chat.send("hello")), str) and chat.turn == 1


# --------------------------------------------------------------------------- (g) init=False
def test_init_false_draws_nothing():
    cfg = LlamaConfig(**TINY)
    before, np_before = backend.get_rng_state(), np.random.get_state()[1].copy()
    m = Llama(cfg, init=False)
    assert backend.get_rng_state() == before
    np.testing.assert_array_equal(np.random.get_state()[1], np_before)
    assert m.num_parameters() == Llama(cfg).num_parameters()
    assert backend.get_rng_state() != before  # init=True does draw


def test_init_is_seeded_and_as_configured():
    M.manual_seed(1)
    a = Llama(LlamaConfig(**TINY))
    M.manual_seed(1)
    b = Llama(LlamaConfig(**TINY))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        if p.ndim == 1:
            assert (p.data == 1).all(), n
        else:
            assert abs(p.data.std() - 0.02) < 0.005, n


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("bad,match", [
    (dict(n_embd=50), "divisible by n_head"),
    (dict(n_kv_head=4), "divisible by n_kv_head"),
    (dict(n_layer=0), "positive integer"),
    (dict(n_embd=18, n_head=6, n_kv_head=2), "even"),
    (dict(rope_theta=0.0), "positive"),
    (dict(eos_token_id=61), "token id"),
])
def test_config_errors_are_one_sentence(bad, match):
    with pytest.raises(ConfigError, match=match):
        LlamaConfig(**{**TINY, **bad})


def test_config_round_trip_and_unknown_keys():
    c = LlamaConfig(**TINY, bos_token_id=1, eos_token_id=2)
    assert LlamaConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown LlamaConfig keys: n_kv_heads"):
        LlamaConfig.from_dict({**TINY, "n_kv_heads": 2})


def test_too_long_input_is_a_config_error():
    with pytest.raises(ConfigError, match="longer than block_size"):
        make()(np.zeros((1, 33), np.int64))


# --------------------------------------------------------------------------- LoRA drops in
def test_lora_replaces_the_projections():
    from minillm.nn import LoRALinear, apply_lora

    m = make(seed=12)
    idx = np.random.default_rng(13).integers(0, 61, (2, 7))
    before = m(idx)[0].data
    names = apply_lora(m, rank=2, targets="self_attn.q_proj,self_attn.v_proj,mlp.down_proj")
    assert len(names) == 6 and isinstance(m.layers[0].self_attn.q_proj, LoRALinear)
    np.testing.assert_allclose(m(idx)[0].data, before, rtol=1e-6, atol=1e-6)  # B starts at 0
    _, loss = m(idx, targets=idx)
    loss.backward()
    trained = {n for n, p in m.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)


def test_crop_block_size():
    m = make()
    m.crop_block_size(8)
    assert m(np.zeros((1, 8), np.int64))[0].shape == (1, 8, 61)
    with pytest.raises(ConfigError, match="longer than block_size 8"):
        m(np.zeros((1, 9), np.int64))
    with pytest.raises(ConfigError, match="cannot grow"):
        m.crop_block_size(64)
