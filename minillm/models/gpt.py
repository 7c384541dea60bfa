"""GPT: the GPT-2 architecture (Radford et al. 2019) over minillm's autograd.

token + learned position embeddings -> dropout -> n_layer pre-LayerNorm Blocks -> final
LayerNorm -> LM head whose weight is the token embedding (weight tying, Press & Wolf 2017), or
with ``tie_word_embeddings=False`` a separate ``lm_head`` matrix (Hugging Face's flag name).
Initialisation as GPT-2: N(0, 0.02) for weights (0.02 is ``initializer_range``, Hugging Face's
name for it), zero biases, and the residual projections (attn.c_proj, mlp.c_proj) scaled by
1/sqrt(2 n_layer) so the residual stream's variance does not grow with depth.
"""

import math
from dataclasses import dataclass

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.errors import ConfigError
from minillm.models import pretrained
from minillm.models.config import ModelConfig
from minillm.models.decoder import DecoderLM
from minillm.nn import Block, Dropout, Embedding, KVCache, LayerNorm, Linear, ModuleList


@dataclass
class GPTConfig(ModelConfig):
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
        self.check_positive_ints(("vocab_size", "block_size", "n_layer", "n_head", "n_embd"))
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not self.initializer_range > 0:
            raise ConfigError(f"initializer_range must be positive, got {self.initializer_range}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class GPT(DecoderLM):
    kind = "GPT"

    def __init__(self, config, init=True):
        """``init=False``: skip drawing the initial weights (GPT-2's normal draws, the costly
        part), for a model whose weights are about to be loaded from a file."""
        super().__init__()
        self.config = c = config
        self.wte = Embedding(c.vocab_size, c.n_embd, init=init)
        self.wpe = Embedding(c.block_size, c.n_embd, init=init)
        self.drop = Dropout(c.dropout)
        self.h = ModuleList(Block(c.n_embd, c.n_head, c.bias, c.dropout, init=init)
                            for _ in range(c.n_layer))
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

    def trunk(self, idx, pos, kv_cache, attention_mask):
        """idx: (B, T) token ids, pos: (T,) or (B, T) positions -> (B, T, C) before ln_f;
        ``GPT.forward`` (DecoderLM's) explains the arguments."""
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = self.run_block(block, x, kv_cache=kv_cache, layer=i,
                               attention_mask=attention_mask)
        return x

    def final_norm(self, x):
        return self.ln_f(x)

    def head(self, x):
        """Logits (..., V) of hidden states x (..., C)."""
        return F.linear(x, self.lm_head_weight)

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
        n -= self.wpe.weight.numel()
        return n if self.config.tie_word_embeddings else n - self.wte.weight.numel()

    def crop_block_size(self, block_size):
        """Shrink the context window and drop the position rows past it."""
        super().crop_block_size(block_size)
        self.wpe.weight.data = self.wpe.weight.data[:block_size].copy()
