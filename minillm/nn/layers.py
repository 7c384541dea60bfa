"""Basic layers: Linear, Embedding, LayerNorm, Dropout, and the transformer MLP.

Default initialisations follow PyTorch (so a user's own models behave as they expect); the GPT
model re-initialises its weights the GPT-2 way.
"""

import math

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.nn.module import Module, Parameter


def _uniform(shape, bound):
    return backend.rng().uniform(-bound, bound, size=shape).astype(backend.DEFAULT_DTYPE)


def _empty(shape, bound=None):
    return np.empty(shape, dtype=backend.DEFAULT_DTYPE)


class Linear(Module):
    """y = x W^T + b with W: (out_features, in_features), as torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, init=True):
        """``init=False`` allocates the weights without drawing them (np.empty): for a layer
        whose weights are about to be loaded from a file."""
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        draw = _uniform if init else _empty
        self.weight = Parameter(draw((out_features, in_features), bound))
        self.bias = Parameter(draw((out_features,), bound)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def project(self, x):
        """x W^T without the bias (the MLP adds the bias inside its fused bias + GELU)."""
        return F.linear(x, self.weight)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table (num_embeddings, embedding_dim): integer ids -> rows."""

    def __init__(self, num_embeddings, embedding_dim, init=True):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        shape = (num_embeddings, embedding_dim)
        w = backend.rng().standard_normal(shape).astype(backend.DEFAULT_DTYPE) if init else \
            _empty(shape)
        self.weight = Parameter(w)

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer normalisation over the last axis, with an optional bias (GPT-2 has one; nanoGPT's
    bias=False configs do not)."""

    def __init__(self, ndim, bias=True, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(ndim, dtype=backend.DEFAULT_DTYPE))
        self.bias = Parameter(np.zeros(ndim, dtype=backend.DEFAULT_DTYPE)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, bias={self.bias is not None}"


class Dropout(Module):
    """Inverted dropout in training mode; the identity in eval mode."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"


class MLP(Module):
    """The transformer feed-forward block: Linear(C, 4C) -> GELU -> Linear(4C, C) -> Dropout.

    With biases, the first Linear's bias add and the GELU run as one fused op (bias_gelu) on
    c_fc's bias-free product ``c_fc.project(x)``, which a LoRALinear c_fc also provides.
    """

    def __init__(self, n_embd, bias=True, dropout=0.0, init=True):
        super().__init__()
        self.c_fc = Linear(n_embd, 4 * n_embd, bias=bias, init=init)
        self.c_proj = Linear(4 * n_embd, n_embd, bias=bias, init=init)
        self.dropout = Dropout(dropout)

    def forward(self, x):  # x: (B, T, C)
        if self.c_fc.bias is not None:
            h = F.bias_gelu(self.c_fc.project(x), self.c_fc.bias)  # (B, T, 4C)
        else:
            h = F.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)
