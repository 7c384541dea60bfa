"""What GPT and Llama share: a decoder-only language model's way from token ids to logits and
loss, and its accounting.

A subclass builds its layers and defines three steps of the forward pass:

    trunk(idx, pos, kv_cache, attention_mask)  (B, T) ids -> (B, T, C) hidden states, through
                                               the embeddings and every block
    final_norm(x)                              (B, T, C) -> (B, T, C)
    head(x)                                    (B, T, C) -> (B, T, V) logits

and ``DecoderLM.forward`` does the rest: checks the input, finds the positions, advances the KV
cache, keeps only the last position when sampling, and computes the loss.

Filling a KV cache with a long prompt (inference, no graph) runs the trunk ``prefill_chunk``
positions at a time (llama.cpp's micro-batch, its ``n_ubatch``, 512 by default there and
here): each chunk attends to the cache the earlier ones filled, so the result is the same to
rounding, and the activations held at once are one chunk's. ``None`` runs the whole prompt at
once. A model loaded with quantized weights uses 128 (minillm.checkpoints.llama): its
activations then stay small beside its weights (SmolLM2-135M in Q4_1, a 512-token prompt:
peak RSS 323 -> 303 MiB, prefill about 7% slower; with float32 weights chunks of 128 would cost
a quarter of the prefill's speed, the BLAS products being short).

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

from minillm import backend
from minillm import functional as F
from minillm.autograd import is_grad_enabled
from minillm.errors import ConfigError
from minillm.models import generation, pretrained
from minillm.nn import Linear, Module
from minillm.nn.checkpoint import checkpoint
from minillm.nn.quant import QuantLinear
from minillm.ops.chunked_ce import linear_cross_entropy
from minillm.tensor import Tensor


class DecoderLM(Module):
    kind = "decoder"  # the model family's name in messages: "GPT", "Llama"
    gradient_checkpointing = False
    chunked_loss = False
    prefill_chunk = 512  # positions per trunk pass when filling a KV cache without a graph

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
        data = idx.data if isinstance(idx, Tensor) else idx
        if not backend.is_cupy(data):  # a device array stays there (np.asarray would refuse it)
            data = np.asarray(data)
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
        x = self._fill(data, pos, kv_cache, attention_mask, last_only)  # (B, T or 1, C)
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

    @classmethod
    def from_pretrained(cls, path_or_name, **options):
        """The model (eval mode) in ``path_or_name``: anything ``minillm.load`` reads (a
        minillm run or checkpoint such as "out/shakespeare_char_tiny", what
        ``save_pretrained`` wrote, a Hugging Face directory, a .gguf file, a built-in name).
        ``options`` go to the loader (device, dropout, ...)."""
        return pretrained.from_pretrained(cls, path_or_name, **options)

    def save_pretrained(self, directory, tokenizer=None, hf_format=None):
        """Write the model (and ``tokenizer``, if given) to ``directory``, which
        ``from_pretrained`` and ``minillm.load`` read back (the tokenizer too).

        A GPT is written as a minillm checkpoint (model.safetensors, config.json,
        checksums.json, and tokenizer.json: what ``minillm pretrain`` saves, so
        ``minillm sample --ckpt DIR`` works too); ``hf_format=True`` writes a Hugging Face
        GPT-2 directory instead, which transformers' ``GPT2LMHeadModel.from_pretrained`` reads
        (minillm reads it back when the tokenizer was saved with it).
        A Llama is always written as a Hugging Face Llama directory (config.json,
        model.safetensors, tokenizer.json), the one layout minillm keeps Llama weights in.
        ``directory`` must be new or hold only files such a save writes (it is replaced
        whole, atomically). Returns the names of the files written."""
        return pretrained.save_pretrained(self, directory, tokenizer=tokenizer,
                                          hf_format=hf_format)

    def generate(self, input_ids, attention_mask=None, max_new_tokens=None, max_length=None,
                 do_sample=False, temperature=1.0, top_k=50, top_p=1.0, num_return_sequences=1,
                 eos_token_id=None, pad_token_id=None, repetition_penalty=1.0, seed=None,
                 use_cache=True):
        """Continue token ids, as Hugging Face's ``model.generate``: ``input_ids`` (a list of
        ints, or an array or Tensor of shape (T,) or (B, T)) -> int64 array
        (B * num_return_sequences, T + new), each input row followed by its new ids.

        Hugging Face's defaults: greedy (``do_sample=False``), ``max_length=20`` (the input
        counts) unless ``max_new_tokens`` is given, ``top_k=50`` and ``temperature=1.0`` when
        sampling, ``eos_token_id`` and ``pad_token_id`` from the config (Llama files have
        them; GPT runs have none: generation then runs to the length). A row that reaches eos
        keeps it and is padded with ``pad_token_id`` after it. ``attention_mask`` (B, T) marks
        real tokens under left padding. ``seed``: None draws from minillm's generator (seeded
        by ``minillm.manual_seed``). The tokenizer's ``decode`` turns a row back into text;
        ``minillm.generate`` does text in, text out.
        """
        options = dict(attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                       max_length=max_length, do_sample=do_sample, temperature=temperature,
                       top_k=top_k, top_p=top_p, num_return_sequences=num_return_sequences,
                       repetition_penalty=repetition_penalty, seed=seed, use_cache=use_cache)
        if eos_token_id is not None:
            options["eos_token_id"] = eos_token_id
        if pad_token_id is not None:
            options["pad_token_id"] = pad_token_id
        return generation.generate(self, input_ids, **options)

    def _fill(self, data, pos, kv_cache, attention_mask, last_only):
        """The trunk over ``data`` (B, T) -> (B, T, C), or (B, 1, C) with ``last_only``; into a
        KV cache without a graph, ``prefill_chunk`` positions at a time."""
        T, n = data.shape[1], self.prefill_chunk
        if kv_cache is None or is_grad_enabled() or not n or T <= n:
            x = self.trunk(data, pos, kv_cache, attention_mask)  # (B, T, C)
            if kv_cache is not None:
                kv_cache.advance(T)
            return x[:, -1:, :] if last_only else x
        mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
        start, parts = kv_cache.length, []
        for s in range(0, T, n):
            e = min(T, s + n)
            # positions (T,) or (B, T); the mask (B, start + T) covers the keys seen so far
            x = self.trunk(data[:, s:e], pos[..., s:e], kv_cache,
                           None if mask is None else mask[:, : start + e])
            kv_cache.advance(e - s)
            if not last_only or e == T:
                parts.append(x[:, -1:, :] if last_only else x)
        return parts[0] if len(parts) == 1 else F.cat(parts, dim=1)

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
