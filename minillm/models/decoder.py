"""What GPT and Llama share: a decoder-only language model's way from token ids to logits and
loss, and its accounting.

A subclass builds its layers and defines three steps of the forward pass:

    trunk(idx, pos, kv_cache, attention_mask)  (B, T) ids -> (B, T, C) hidden states, through
                                               the embeddings and every block
    final_norm(x)                              (B, T, C) -> (B, T, C)
    head(x)                                    (B, T, C) -> (B, T, V) logits

and ``DecoderLM.forward`` does the rest: checks the input, finds the positions, advances the KV
cache, keeps only the last position when sampling, and computes the loss.

Two switches trade compute for memory in training (both off by default; the results are the
same to rounding):

    model.gradient_checkpointing = True   each block's activations are recomputed in the
                                          backward (``run_block``, minillm.nn.checkpoint)
    model.chunked_loss = True             with targets, the head and the cross-entropy run as one
                                          op a chunk of rows at a time, on the counted rows only
                                          (minillm.ops.chunked_ce); forward then returns
                                          (None, loss): the full logits are never built
"""

import numpy as np

from minillm import functional as F
from minillm.autograd import is_grad_enabled
from minillm.errors import ConfigError
from minillm.nn import Linear, Module
from minillm.nn.checkpoint import checkpoint
from minillm.nn.quant import QuantLinear
from minillm.ops.chunked_ce import linear_cross_entropy
from minillm.tensor import Tensor


class DecoderLM(Module):
    kind = "decoder"  # the model family's name in messages: "GPT", "Llama"
    gradient_checkpointing = False
    chunked_loss = False

    def forward(self, idx, targets=None, kv_cache=None, attention_mask=None, position_ids=None,
                ignore_index=-100, last_only=False, return_hidden=False):
        """idx: (B, T) token ids -> (logits (B, T, V), loss or None).

        ``targets`` (B, T): mean cross-entropy is returned as loss. ``kv_cache``: idx holds only
        the new positions, which start at ``kv_cache.length``. ``attention_mask`` (B, Tk) marks
        real tokens (False at left padding); ``position_ids`` (B, T) override the positions
        start..start+T-1 (start = ``kv_cache.length`` or 0), e.g. counted from each row's first
        real token under left padding. ``last_only`` returns logits for the last position only
        (B, 1, V), for sampling. ``return_hidden`` returns the final hidden states (B, T, C)
        after the final norm instead of the (logits, loss) pair (for task heads such as
        GPTClassifier; the LM head is skipped).
        """
        data = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
        if data.ndim != 2:
            raise ConfigError(f"{self.kind} input must be (batch, time) token ids, got shape "
                              f"{data.shape}")
        B, T = data.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ConfigError(
                f"sequence of length {start + T} is longer than block_size {self.config.block_size}"
            )
        if position_ids is None:
            pos = np.arange(start, start + T)  # (T,)
        else:  # left on its device: (B, T)
            pos = position_ids.data if isinstance(position_ids, Tensor) else position_ids
        x = self.trunk(data, pos, kv_cache, attention_mask)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(T)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.final_norm(x)
        if return_hidden:
            return x  # (B, T, C)
        if targets is not None and self.chunked_loss:
            w = self.loss_head_weight()
            if w is not None:  # the (B, T, V) logits are never built
                return None, linear_cross_entropy(x, w, targets, ignore_index=ignore_index)
        logits = self.head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets, ignore_index=ignore_index)
        return logits, loss

    def run_block(self, block, x, **kw):
        """block(x, **kw), with its activations recomputed in the backward when
        ``gradient_checkpointing`` is on (training with a graph, no KV cache)."""
        if (self.gradient_checkpointing and self.training and is_grad_enabled()
                and kw.get("kv_cache") is None):
            return checkpoint(lambda t: block(t, **kw), x, block.parameters())
        return block(x, **kw)

    def loss_head_weight(self):
        """The head's (V, C) matrix for the chunked loss: a Tensor or a QuantWeight; None when
        the head is another kind of layer (a bias, an adapter), which runs unfused."""
        lm_head = self._modules.get("lm_head")
        if lm_head is None:
            return self.lm_head_weight
        if type(lm_head) in (Linear, QuantLinear) and lm_head.bias is None:
            return lm_head.weight
        return None

    def flops_per_token(self, T=None):
        """Training FLOPs per token, forward + backward (PaLM appendix B): 6 N for the weight
        matmuls plus 12 L C T for attention's q k^T and p v."""
        c = self.config
        T = T or c.block_size
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.n_layer * c.n_embd * T

    def crop_block_size(self, block_size):
        """Shrink the context window (e.g. to fine-tune on short texts). Rotary embeddings
        (Llama) have no position table, so only the limit changes; GPT also drops rows."""
        if block_size > self.config.block_size:
            raise ConfigError(f"cannot grow block_size from {self.config.block_size} to "
                              f"{block_size}")
        self.config.block_size = block_size
