"""The LM head and the cross-entropy as one op, a chunk of rows at a time: the (N, V) logits
never exist whole, neither in the forward nor in the backward.

    loss = (1/n) sum over counted rows r of  lse(h_r W^T) - h_r . W[t_r]

h: (N, C) final hidden states, W: (V, C) the output matrix (a float Tensor, or a frozen
``QuantWeight`` in GGML blocks, multiplied through the quantized kernels without a float copy),
t: (N,) targets; a row counts when t_r != ignore_index, n is the number of counted rows.

Why: for a 49152-token vocabulary the logits of B*T rows take B*T*196 KB in float32, and the
unfused head keeps them, their gradient and the cross-entropy's softmax alive at once; on
SmolLM2-135M that is several times the trainable state. Here the forward keeps only the counted
rows of h and their log-sum-exp; the backward recomputes each chunk's logits (the same product
again: one extra head matmul per step) and turns them into the chunk's gradient in place:

    dlogits_c = (softmax(h_c W^T) - onehot(t_c)) * dloss / n        (m, V), one chunk
    dh_c = dlogits_c W          dW += dlogits_c^T h_c              (dW only for a float Tensor W)

Rows whose target is ``ignore_index`` (prompt, padding: everything but the assistant's tokens in
chat fine-tuning) are skipped entirely: no logits, a zero gradient. Peak extra memory is one
chunk of logits, ``chunk_rows`` * V floats (CHUNK_ELEMS by default: 16 MiB in float32).

The kernels are the existing ones: ``matmul`` (float W) or ``qmatmul_forward`` /
``qmatmul_backward_input`` (quantized W), and ``cross_entropy_forward`` / ``_backward`` on each
chunk. The composite twin ``linear_cross_entropy_composite`` (linear, then the composite
cross-entropy over the full logits) is what tests/ops/test_chunked_ce.py holds this op to.
"""

import numpy as np

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.kernels import registry
from minillm.kernels.quant import QuantWeight
from minillm.tensor import Tensor

CHUNK_ELEMS = 1 << 22  # logits per chunk (rows * V): 16 MiB of float32


def _rows_per_chunk(V, chunk_rows):
    return int(chunk_rows) if chunk_rows else max(1, CHUNK_ELEMS // max(V, 1))


def _head(h, w, qw):  # h: (m, C) -> (m, V)
    if qw is not None:
        return registry.get("qmatmul_forward", h)(h, qw)
    return registry.get("matmul", h)(h, w.T)


class LinearCrossEntropy(Function):
    """Fused head + mean cross-entropy over counted rows; see the module docstring.

    Inputs: h (N, C) and, for a float head, W (V, C) (a gradient flows to it when it requires
    one). Params: qw (a QuantWeight, instead of W), targets (N,) ints, ignore_index, chunk_rows.
    Saves the counted rows of h (n, C), their targets and log-sum-exp (n,).
    """

    def forward(self, h, w=None, qw=None, targets=None, ignore_index=-100, chunk_rows=None):
        xp = backend.array_module(h)
        t = xp.asarray(targets).reshape(-1)
        rows = xp.flatnonzero(t != ignore_index)  # (n,) the counted rows
        hs = xp.ascontiguousarray(h[rows])  # (n, C)
        ts = xp.ascontiguousarray(t[rows]).astype(np.int64)  # (n,)
        n = int(rows.shape[0])
        V = qw.shape[0] if qw is not None else w.shape[0]
        m = _rows_per_chunk(V, chunk_rows)
        lse = xp.empty(n, dtype=h.dtype)
        ce = registry.get("cross_entropy_forward", h)
        total = 0.0
        for s in range(0, n, m):
            logits = _head(hs[s: s + m], w, qw)  # (m, V)
            loss_c, lse[s: s + m] = ce(logits, ts[s: s + m], ignore_index)
            total += float(loss_c) * logits.shape[0]  # the chunk's mean times its rows
        self.saved = (hs, ts, lse, rows, h.shape, w, qw, ignore_index, m)
        return xp.asarray(total / max(n, 1), dtype=h.dtype)

    def backward(self, dloss):
        hs, ts, lse, rows, hshape, w, qw, ignore_index, m = self.saved
        xp = backend.array_module(hs)
        n = hs.shape[0]
        dh = xp.zeros(hshape, dtype=hs.dtype)  # (N, C): ignored rows get 0
        need_w = w is not None and len(self.needs_input_grad) > 1 and self.needs_input_grad[1]
        dw = xp.zeros_like(w) if need_w else None
        ce_back = registry.get("cross_entropy_backward", hs)
        mm = registry.get("matmul", hs)
        for s in range(0, n, m):
            h_c, t_c = hs[s: s + m], ts[s: s + m]
            logits = _head(h_c, w, qw)  # (m, V), recomputed
            # the kernel divides by the chunk's count; the loss is the mean over all n rows
            dlogits = ce_back(float(dloss) * h_c.shape[0] / n, logits, lse[s: s + m], t_c,
                              ignore_index)  # (m, V)
            del logits
            if qw is not None:
                dh[rows[s: s + m]] = registry.get("qmatmul_backward_input", dlogits)(dlogits, qw)
            else:
                dh[rows[s: s + m]] = mm(dlogits, w)  # (m, C)
                if need_w:
                    dw += mm(dlogits.T, h_c)  # (V, C)
        return (dh, dw) if w is not None else (dh,)


def linear_cross_entropy(h, weight, targets, ignore_index=-100, chunk_rows=None):
    """Mean cross-entropy of the logits h W^T against ``targets``, without building them whole.

    h: (..., C) Tensor; weight: (V, C) Tensor or QuantWeight; targets: (...) ints (array or
    Tensor, constant). The same value and gradients as ``cross_entropy(linear(h, W), targets)``.
    """
    t = targets.data if isinstance(targets, Tensor) else targets
    C = h.shape[-1]
    if weight.shape[1] != C:
        raise MinillmError(f"linear_cross_entropy: hidden states have {C} features but the "
                           f"head's weight is {tuple(weight.shape)}")
    if int(np.prod(t.shape)) != int(np.prod(h.shape[:-1])):
        raise MinillmError(f"linear_cross_entropy: {int(np.prod(t.shape))} targets for "
                           f"{int(np.prod(h.shape[:-1]))} rows of hidden states")
    h2 = h.reshape(-1, C)  # (N, C)
    params = dict(targets=t, ignore_index=ignore_index, chunk_rows=chunk_rows)
    if isinstance(weight, QuantWeight):
        return LinearCrossEntropy.apply(h2, qw=weight, **params)
    return LinearCrossEntropy.apply(h2, weight, **params)


def linear_cross_entropy_composite(h, weight, targets, ignore_index=-100):
    """The composite twin: the full logits through ``linear``, then the composite
    cross-entropy. A QuantWeight is dequantized first (the readable definition)."""
    from minillm.ops.composite import cross_entropy
    from minillm.ops.linalg import linear

    if isinstance(weight, QuantWeight):
        weight = Tensor(weight.dequantize().astype(h.dtype))
    return cross_entropy(linear(h, weight), targets, ignore_index)
