"""Ops on weights kept in GGML blocks (kernels/quant.py): the product x W^T and the row lookup.

The weight is frozen: it is a ``QuantWeight`` passed as a plain parameter of the op, not a
Tensor, so the graph never asks for its gradient. The input's gradient still flows (dx = dy W),
which is what LoRA on a quantized base needs: the adapters beside the frozen product train.
"""

import numpy as np

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.kernels import registry
from minillm.kernels.quant import QuantWeight
from minillm.tensor import Tensor


class QuantLinear(Function):
    """y = x W^T with x: (..., K), W: (O, K) in blocks -> (..., O);  dx = dy W.

    Both products dequantize W inside the kernel (qmatmul_forward / qmatmul_backward_input), so
    the result equals dequantize-then-matmul to the rounding of x's dtype.
    """

    def forward(self, x, qw):
        x2 = x.reshape(-1, x.shape[-1])  # (N, K)
        y = registry.get("qmatmul_forward", x2)(x2, qw)  # (N, O)
        self.saved = (qw, x.shape)
        return y.reshape(x.shape[:-1] + (qw.shape[0],))

    def backward(self, dy):
        qw, xshape = self.saved
        dy2 = dy.reshape(-1, dy.shape[-1])  # (N, O)
        return (registry.get("qmatmul_backward_input", dy2)(dy2, qw).reshape(xshape),)


def quant_linear(x, qw):
    """x W^T for a QuantWeight W (out, in), as ``linear(x, W)`` with a dequantized W."""
    if not isinstance(qw, QuantWeight):
        raise MinillmError(f"quant_linear takes a QuantWeight, not {type(qw).__name__}")
    if x.shape[-1] != qw.shape[1]:
        raise MinillmError(
            f"linear: input has {x.shape[-1]} features (shape {tuple(x.shape)}) but the weight "
            f"expects {qw.shape[1]} (weight shape {qw.shape})"
        )
    return QuantLinear.apply(x, qw=qw)


def quant_embedding(idx, qw, dtype=np.float32):
    """Rows ``qw[idx]`` dequantized (only those rows): idx (...) ints -> (..., C). No gradient
    (the table is frozen). The rows are on idx's device."""
    ids = idx.data if isinstance(idx, Tensor) else idx
    on_device = backend.is_cupy(ids)
    # the lookup runs on the host, where the blocks are: a few ids come over, and only the rows
    # looked up are decoded and go to the device
    ids = backend.to_numpy(ids) if on_device else np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise MinillmError(f"embedding ids must be integers, not {ids.dtype}")
    V = qw.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise MinillmError(f"token id {int(ids.max() if ids.max() >= V else ids.min())} is "
                           f"outside the embedding table (0..{V - 1})")
    rows = qw.rows(ids).astype(dtype, copy=False)
    return Tensor(backend.to_device(rows, "cuda") if on_device else rows)
