"""Llama: the decoder of LLaMA (Touvron et al. 2023) and its descendants (Llama 2/3, SmolLM,
TinyLlama, Mistral without sliding windows) over minillm's autograd.

token embedding -> n_layer pre-norm LlamaBlocks (RMSNorm, grouped-query attention with rotary
position embeddings, SwiGLU MLP; no biases, no position table) -> final RMSNorm -> LM head,
which is the token embedding when ``tie_word_embeddings`` (SmolLM) or its own (V, C) matrix.
Parameter names are Hugging Face's without the ``model.`` prefix, so checkpoints map 1:1:
``embed_tokens.weight``, ``layers.{i}.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}.weight``, ``norm.weight``, ``lm_head.weight``.
Initialisation as Hugging Face's: N(0, initializer_range) for every matrix, ones for the norms.
``Llama(config, init=False)`` allocates the weights without drawing them, for a model about to
be loaded from a file.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.autograd import is_grad_enabled, no_grad
from minillm.errors import ConfigError
from minillm.kernels.reference import rope_cos_sin
from minillm.models.config import ModelConfig
from minillm.models.decoder import DecoderLM
from minillm.nn import Embedding, KVCache, Linear, ModuleList
from minillm.nn.llama import LlamaBlock, RMSNorm
from minillm.tensor import Tensor


def _common_prefix(prompts):
    """Length of the longest run of token ids every prompt begins with."""
    n = 0
    for column in zip(*prompts):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


@dataclass
class LlamaConfig(ModelConfig):
    vocab_size: int = 32000
    block_size: int = 2048  # the longest context (Hugging Face: max_position_embeddings)
    n_layer: int = 22
    n_head: int = 32
    n_kv_head: int = 4  # key/value heads; each serves n_head / n_kv_head query heads
    n_embd: int = 2048
    intermediate_size: int = 5632  # the SwiGLU MLP's hidden width F
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0  # base of the rotary frequencies
    rope_interleaved: bool = False  # q/k rows in GGUF/Meta pair order; False: Hugging Face's
    tie_word_embeddings: bool = True  # LM head = embed_tokens; False: its own lm_head
    initializer_range: float = 0.02
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None

    def __post_init__(self):
        self.check_positive_ints(("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head",
                                  "n_embd", "intermediate_size"))
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head={self.n_head} is not divisible by "
                              f"n_kv_head={self.n_kv_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"the head size n_embd / n_head = {self.n_embd // self.n_head} "
                              f"must be even for rotary embeddings")
        for f in ("rms_norm_eps", "rope_theta", "initializer_range"):
            if not float(getattr(self, f)) > 0:
                raise ConfigError(f"LlamaConfig.{f} must be positive, got {getattr(self, f)!r}")
        for f in ("bos_token_id", "eos_token_id"):
            v = getattr(self, f)
            ok = isinstance(v, (int, np.integer)) and 0 <= v < self.vocab_size
            if v is not None and not ok:
                raise ConfigError(f"LlamaConfig.{f} must be a token id below vocab_size "
                                  f"{self.vocab_size}, got {v!r}")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head


class Llama(DecoderLM):
    kind = "Llama"

    def __init__(self, config, init=True):
        super().__init__()
        self.config = c = config
        self.embed_tokens = Embedding(c.vocab_size, c.n_embd, init=False)
        self.layers = ModuleList(
            LlamaBlock(c.n_embd, c.n_head, c.n_kv_head, c.intermediate_size, c.rms_norm_eps,
                       c.rope_theta, c.rope_interleaved, init=False)
            for _ in range(c.n_layer))
        self.norm = RMSNorm(c.n_embd, c.rms_norm_eps)
        if not c.tie_word_embeddings:  # created last: a tied model draws the same initial weights
            self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False, init=False)
        if init:
            self._init_weights()

    def _init_weights(self):
        rng = backend.rng()
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.data = np.ones_like(p.data)
            else:
                p.data = (rng.standard_normal(p.shape) * std).astype(p.dtype)

    @property
    def lm_head_weight(self):
        """The (vocab, C) output matrix: embed_tokens' when tied, else lm_head's."""
        return self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def rope_angles(self, positions, dtype=np.float32):
        """cos, sin (..., D/2) of the rotary angles at integer ``positions`` (T,) or (B, T)."""
        return rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype=dtype)

    def trunk(self, idx, pos, kv_cache, attention_mask):
        """idx: (B, T) token ids, pos: (T,) or (B, T) positions, which set the rotary angles
        -> (B, T, C) before the final norm; ``Llama.forward`` (DecoderLM's) explains the
        arguments."""
        x = self.embed_tokens(idx)  # (B, T, C)
        if backend.is_cupy(self.norm.weight.data) and x.device != "cuda":
            x = x.to("cuda")  # a quantized table looks rows up on the host (QuantEmbedding)
        angle_dtype = x.dtype if x.dtype.itemsize >= 4 else np.float32  # float32 under bf16/fp16
        rope = self.rope_angles(pos, angle_dtype)  # (T, D/2) or (B, T, D/2), shared by all layers
        if x.device == "cuda":  # host positions: the angles go over once, not once per layer
            rope = tuple(backend.to_device(a, "cuda") for a in rope)
        elif kv_cache is not None and not is_grad_enabled() and self._array_path(
                idx.shape[1], attention_mask):
            # filling the cache (a prompt, or one token per row when decoding): the blocks'
            # array step, without the graph's bookkeeping and with the fused projections (with
            # a mask: one token in rows of different lengths, as the server batches them)
            mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            lengths = None
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)  # (B, Tk)
                lengths = mask.sum(axis=1)
                if (lengths == mask.shape[1]).all():
                    mask = lengths = None  # rows of one length: the kernel over the batch
                elif idx.shape[1] == 1 and (
                        mask == (np.arange(mask.shape[1]) < lengths[:, None])).all():
                    mask = None  # each row's keys a prefix (a server's ragged cache)
                else:
                    lengths = None  # left padding: the masked composite
            h = x.data
            for i, block in enumerate(self.layers):
                h = block.step(h, kv_cache, i, rope, mask, lengths=lengths)
            return Tensor(h)
        for i, block in enumerate(self.layers):
            x = self.run_block(block, x, kv_cache=kv_cache, layer=i,
                               attention_mask=attention_mask, rope=rope)
        return x

    def prefill_packed(self, prompts, kv_cache):
        """Prompts of different lengths run as one row, end to end, without padding (each
        attends to itself only: "varlen" attention), inference on the CPU: a server's prompts
        that arrive together cost their own positions, not the longest one's times their
        count, and the prefix they all begin with (a chat template's system prompt) is computed
        once. ``prompts``: lists of token ids; ``kv_cache``: an empty cache of len(prompts)
        rows, whose row j receives prompt j's keys and values (positions 0..len-1) ->
        (len(prompts), 1, C) Tensor, the final-normed hidden state at each prompt's last
        token (the LM head's input)."""
        lens = [len(p) for p in prompts]
        if not prompts or min(lens) < 1 or kv_cache.length or len(kv_cache.k[0]) < len(lens):
            raise ConfigError("prefill_packed takes non-empty prompts and an empty KV cache "
                              "with a row for each")
        if max(lens) > min(self.config.block_size, kv_cache.max_len):
            raise ConfigError(f"a prompt of {max(lens)} tokens does not fit the context of "
                              f"{min(self.config.block_size, kv_cache.max_len)}")
        # the shared prefix, leaving each prompt at least one position of its own (its last
        # hidden state is the one asked for)
        shared = _common_prefix(prompts) if len(prompts) > 1 else 0
        shared = min(shared, min(lens) - 1)
        rests = [np.asarray(p[shared:], dtype=np.int64) for p in prompts]
        ids = np.concatenate([np.asarray(prompts[0][:shared], dtype=np.int64)] + rests)[None]
        pos = np.concatenate([np.arange(shared)] + [np.arange(shared, n) for n in lens])  # (N,)
        ends = shared + np.cumsum([len(r) for r in rests])
        segments = list(zip((ends - [len(r) for r in rests]).tolist(), ends.tolist()))
        h = self.embed_tokens(ids).data  # (1, N, C)
        rope = self.rope_angles(pos, h.dtype if h.dtype.itemsize >= 4 else np.float32)
        last = len(self.layers) - 1
        with no_grad():
            for i, block in enumerate(self.layers):
                # the last layer's output projection and MLP only for each prompt's last
                # position: (1, N, C) -> (1, k, C) (as llama.cpp skips the rows no logit needs)
                h = block.step(h, kv_cache, i, rope, segments=segments, shared=shared,
                               keep=ends - 1 if i == last else None)
            return self.final_norm(Tensor(h[0][:, None, :]))  # (k, 1, C)

    @staticmethod
    def _array_path(T, attention_mask):
        """Whether LlamaBlock.step runs these T new positions: one per row, or a prompt without
        padding (a padded prompt takes the graph's masked attention)."""
        if T == 1 or attention_mask is None:
            return True
        mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
        return bool(np.asarray(mask).all())

    def final_norm(self, x):
        return self.norm(x)

    def head(self, x):
        """Logits (..., V) of hidden states x (..., C): the ``lm_head`` module when the model
        has one (untied, or a quantized copy of the tied table a loader attached), else the
        token embedding's matrix."""
        lm_head = self._modules.get("lm_head")
        if lm_head is not None:
            return lm_head(x)
        return F.linear(x, self.embed_tokens.weight)

    def new_kv_cache(self, batch_size, max_len=None, dtype=None):
        c = self.config
        like = self.norm.weight.data  # always a float array (the matrices may be quantized)
        return KVCache(c.n_layer, batch_size, c.n_kv_head, c.head_dim, max_len or c.block_size,
                       dtype=dtype or like.dtype, like=like)

    # ------------------------------------------------------------------ accounting
    def num_parameters(self, non_embedding=False, trainable_only=False):
        """Parameter count; ``non_embedding`` leaves out the token table when the head is untied
        (a tied table is counted: it is also the LM head's matmul), as GPT.num_parameters."""
        n = super().num_parameters(trainable_only=trainable_only)
        if non_embedding and not self.config.tie_word_embeddings:
            n -= self.embed_tokens.weight.numel()
        return n
