"""GPT: the GPT-2 architecture (Radford et al. 2019) over minillm's autograd.

token + learned position embeddings -> dropout -> n_layer pre-LayerNorm Blocks -> final
LayerNorm -> LM head whose weight is the token embedding (weight tying, Press & Wolf 2017), or
with ``tie_word_embeddings=False`` a separate ``lm_head`` matrix (Hugging Face's flag name).
Initialisation as GPT-2: N(0, 0.02) for weights (0.02 is ``initializer_range``, Hugging Face's
name for it), zero biases, and the residual projections (attn.c_proj, mlp.c_proj) scaled by
1/sqrt(2 n_layer) so the residual stream's variance does not grow with depth.
"""

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.errors import ConfigError
from minillm.models import pretrained
from minillm.nn import Block, Dropout, Embedding, KVCache, LayerNorm, Linear, Module, ModuleList
from minillm.tensor import Tensor


@dataclass
class GPTConfig:
    vocab_size: int = 50304
    block_size: int = 1024  # the longest context the position table covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    tie_word_embeddings: bool = True  # LM head = wte (GPT-2); False: its own (vocab, C) lm_head
    initializer_range: float = 0.02  # std of the initial weights (GPT-2's 0.02)

    def __post_init__(self):
        for f in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"GPTConfig.{f} must be a positive integer, got {getattr(self, f)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not self.initializer_range > 0:
            raise ConfigError(f"initializer_range must be positive, got {self.initializer_range}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown GPTConfig keys: {', '.join(unknown)}")
        return cls(**d)


class GPT(Module):
    def __init__(self, config, init=True):
        """``init=False``: skip drawing the initial weights (GPT-2's normal draws, the costly
        part), for a model whose weights are about to be loaded from a file."""
        super().__init__()
        self.config = c = config
        self.wte = Embedding(c.vocab_size, c.n_embd, init=init)
        self.wpe = Embedding(c.block_size, c.n_embd, init=init)
        self.drop = Dropout(c.dropout)
        self.h = ModuleList(Block(c.n_embd, c.n_head, c.bias, c.dropout) for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, bias=c.bias)
        if not c.tie_word_embeddings:  # created last: a tied model draws the same initial weights
            self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False, init=init)
        if init:
            self._init_weights()

    def _init_weights(self):
        rng = backend.rng()
        std = self.config.initializer_range
        proj_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data = np.zeros_like(p.data)
            elif name.startswith("ln") or ".ln_" in name:
                p.data = np.ones_like(p.data)
            else:
                s = proj_std if name.endswith("c_proj.weight") else std
                p.data = (rng.standard_normal(p.shape) * s).astype(p.dtype)

    @classmethod
    def from_pretrained(cls, path, dropout=None, **options):
        """A GPT (eval mode) from anything ``minillm.load`` reads: a local Hugging Face GPT-2
        directory (gpt2 ... gpt2-xl), a minillm run or checkpoint, a LoRA fine-tune run.
        ``dropout``: None keeps the file's; a number overrides it (for fine-tuning)."""
        return pretrained.from_pretrained(cls, path, dropout=dropout, **options)

    @property
    def lm_head_weight(self):
        """The (vocab, C) output matrix: wte's when tied, else lm_head's."""
        return self.wte.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def forward(self, idx, targets=None, kv_cache=None, attention_mask=None, position_ids=None,
                ignore_index=-100, last_only=False, return_hidden=False):
        """idx: (B, T) token ids -> (logits (B, T, V), loss or None).

        ``targets`` (B, T): mean cross-entropy is returned as loss. ``kv_cache``: idx holds only
        the new positions, which start at ``kv_cache.length``. ``attention_mask`` (B, Tk) marks
        real tokens (False at left padding); ``position_ids`` (B, T) override 0..T-1.
        ``last_only`` returns logits for the last position only (B, 1, V), for sampling.
        ``return_hidden`` returns the final hidden states (B, T, C) after ln_f instead of the
        (logits, loss) pair (for task heads such as GPTClassifier; the LM head is skipped).
        """
        data = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
        if data.ndim != 2:
            raise ConfigError(f"GPT input must be (batch, time) token ids, got shape {data.shape}")
        B, T = data.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ConfigError(
                f"sequence of length {start + T} is longer than block_size {self.config.block_size}"
            )
        if position_ids is None:
            pos = np.arange(start, start + T)  # (T,)
        else:
            pos = position_ids.data if isinstance(position_ids, Tensor) else np.asarray(position_ids)
        x = self.drop(self.wte(data) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, kv_cache=kv_cache, layer=i, attention_mask=attention_mask)
        if kv_cache is not None:
            kv_cache.advance(T)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.ln_f(x)
        if return_hidden:
            return x  # (B, T, C)
        logits = F.linear(x, self.lm_head_weight)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets, ignore_index=ignore_index)
        return logits, loss

    def new_kv_cache(self, batch_size, max_len=None, dtype=None):
        c = self.config
        like = self.wte.weight.data
        return KVCache(c.n_layer, batch_size, c.n_head, c.n_embd // c.n_head,
                       max_len or c.block_size, dtype=dtype or like.dtype, like=like)

    # ------------------------------------------------------------------ accounting
    def num_parameters(self, non_embedding=False, trainable_only=False):
        """Parameter count; ``non_embedding`` leaves out the position table, and the token
        table too when the head is untied (a tied table is counted: it is also the LM head's
        matmul), as nanoGPT reports."""
        n = super().num_parameters(trainable_only=trainable_only)
        if not non_embedding:
            return n
        n -= self.wpe.weight.size
        return n if self.config.tie_word_embeddings else n - self.wte.weight.size

    def flops_per_token(self, T=None):
        """Training FLOPs per token, forward + backward (PaLM appendix B): 6 N for the weight
        matmuls plus 12 L C T for attention's q k^T and p v."""
        c = self.config
        T = T or c.block_size
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.n_layer * c.n_embd * T

    def crop_block_size(self, block_size):
        """Shrink the context window (drop position rows), e.g. to fine-tune on short texts."""
        if block_size > self.config.block_size:
            raise ConfigError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        self.wpe.weight.data = self.wpe.weight.data[:block_size].copy()
