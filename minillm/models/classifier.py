"""GPTClassifier: a GPT body with a linear classification head (as GPT-1's fine-tuning, Radford
et al. 2018, section 3.2): the final hidden state (after ln_f) of the last real token of each
sequence -> Linear(C, n_classes) -> logits.

With causal attention the last token is the only position that has seen the whole text, so its
hidden state is the summary. Sequences are right-padded, and because attention is causal the pad
positions to the right of a text's last token never influence it: no attention mask is needed.
"""

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.errors import ConfigError
from minillm.nn import Linear, Module
from minillm.tensor import Tensor


class GPTClassifier(Module):
    def __init__(self, gpt, n_classes):
        super().__init__()
        if int(n_classes) < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.n_classes = int(n_classes)
        self.gpt = gpt
        self.head = Linear(gpt.config.n_embd, self.n_classes)
        like = gpt.wte.weight.data
        w = backend.rng().standard_normal(self.head.weight.shape) * 0.02  # as GPT-2's Linear init
        self.head.weight.data = backend.to_device(w.astype(like.dtype), backend.device_of(like))
        self.head.bias.data = backend.to_device(
            np.zeros(self.n_classes, like.dtype), backend.device_of(like)
        )

    @property
    def config(self):
        return self.gpt.config

    def forward(self, idx, last_index=None, labels=None):
        """idx: (B, T) ids (right-padded); last_index: (B,) position of each row's last real
        token (default T-1); labels: (B,) class ids -> (logits (B, n_classes), mean CE or None)."""
        data = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
        B, T = data.shape
        last = np.full(B, T - 1) if last_index is None else np.asarray(last_index, dtype=np.int64)
        h = self.gpt(data, return_hidden=True)  # (B, T, C)
        pooled = h[np.arange(B), last]  # (B, C): hidden state of each row's last real token
        logits = self.head(pooled)  # (B, n_classes)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, np.asarray(labels, dtype=np.int64))
        return logits, loss
