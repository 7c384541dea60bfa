"""Differentiable ops. Each is a Function (forward/backward pair) plus a small function that
checks its arguments and applies it; ``Tensor`` methods and operators call these."""

from minillm.ops.elementwise import (
    abs,
    add,
    cast,
    clamp,
    clip,
    clone,
    div,
    exp,
    gelu,
    log,
    masked_fill,
    mul,
    neg,
    pow,
    relu,
    sigmoid,
    sqrt,
    square,
    sub,
    tanh,
    where,
)
from minillm.ops.linalg import linear, matmul
from minillm.ops.nn import (
    bias_gelu,
    cross_entropy,
    dropout,
    embedding,
    layer_norm,
    log_softmax,
    scaled_dot_product_attention,
    self_attention,
    softmax,
)
from minillm.ops.reduce import max, mean, min, norm, std, sum, var
from minillm.ops.shape import (
    cat,
    concat,
    expand,
    flatten,
    getitem,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    transpose,
    unsqueeze,
    view,
)
