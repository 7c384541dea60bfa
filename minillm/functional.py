"""The stateless op namespace PyTorch users know as ``F``: ``import minillm.functional as F``."""

from minillm.ops import (  # noqa: F401
    bias_gelu,
    cat,
    concat,
    cross_entropy,
    dropout,
    embedding,
    exp,
    gelu,
    layer_norm,
    linear,
    log,
    log_softmax,
    masked_fill,
    matmul,
    relu,
    scaled_dot_product_attention,
    self_attention,
    sigmoid,
    softmax,
    split,
    sqrt,
    stack,
    tanh,
    where,
)


def silu(x):
    """x * sigmoid(x), composed from primitives (autograd derives its backward)."""
    return x * x.sigmoid()


# Llama ops: RMSNorm, rotary embeddings, SwiGLU (fused Functions in minillm/ops/llama.py)
from minillm.ops.llama import rms_norm, rope, swiglu  # noqa: E402, F401
