"""Matrix products: matmul (2-D and batched, batch dims broadcast) and linear (x W^T + b).

Both call kernel ``matmul`` through kernels/registry.py: on the CPU the BLAS run from Numba's
thread pool (kernels/cpu/matmul/, v6), on CuPy arrays cuBLAS.
"""

from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.kernels import registry
from minillm.ops._util import lift, unbroadcast
from minillm.tensor import Tensor


def _mm(a, b):
    return registry.get("matmul", a)(a, b)


class MatMul(Function):
    """y = a @ b with a: (..., M, K), b: (..., K, N) -> (..., M, N), batch dims broadcast.

    da = dy @ b^T,  db = a^T @ dy, each summed back over the batch dims it was broadcast along.
    """

    def forward(self, a, b):
        self.saved = (a, b)
        return _mm(a, b)

    def backward(self, dy):
        a, b = self.saved
        da = db = None
        if self.needs_input_grad[0]:
            da = unbroadcast(_mm(dy, b.swapaxes(-1, -2)), a.shape, a.dtype)
        if self.needs_input_grad[1]:
            db = unbroadcast(_mm(a.swapaxes(-1, -2), dy), b.shape, b.dtype)
        return da, db


class Linear(Function):
    """y = x W^T + b with x: (..., C_in), W: (C_out, C_in), b: (C_out,) -> (..., C_out).

    The leading dims are flattened into one so the BLAS sees a single large GEMM:
    dx = dy W,  dW = dy^T x,  db = sum of dy over rows.
    """

    def forward(self, x, w, b=None):
        x2 = x.reshape(-1, x.shape[-1])  # (N, C_in)
        y = _mm(x2, w.T)  # (N, C_out)
        if b is not None:
            y += b
        self.saved = (x2, w, x.shape)
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, dy):
        x2, w, xshape = self.saved
        dy2 = dy.reshape(-1, dy.shape[-1])  # (N, C_out)
        dx = _mm(dy2, w).reshape(xshape) if self.needs_input_grad[0] else None
        dw = _mm(dy2.T, x2) if self.needs_input_grad[1] else None
        if len(self.needs_input_grad) == 3 and self.needs_input_grad[2]:
            return dx, dw, dy2.sum(axis=0)
        return dx, dw, None


def matmul(a, b):
    if not isinstance(a, Tensor):
        a = lift(a, b)
    if not isinstance(b, Tensor):
        b = lift(b, a)
    if a.ndim < 2 or b.ndim < 2:
        raise MinillmError(
            f"matmul needs operands with at least 2 dimensions, got shapes {tuple(a.shape)} "
            f"and {tuple(b.shape)}; reshape a vector to (1, n) or (n, 1)"
        )
    if a.shape[-1] != b.shape[-2]:
        raise MinillmError(
            f"matmul of {tuple(a.shape)} with {tuple(b.shape)}: inner dimensions "
            f"{a.shape[-1]} and {b.shape[-2]} differ"
        )
    try:
        return MatMul.apply(a, b)
    except ValueError:
        raise MinillmError(
            f"matmul of {tuple(a.shape)} with {tuple(b.shape)}: batch dimensions "
            f"{tuple(a.shape[:-2])} and {tuple(b.shape[:-2])} cannot be broadcast"
        ) from None


def linear(x, weight, bias=None):
    """x W^T + b, PyTorch's F.linear: weight is (out_features, in_features)."""
    if x.shape[-1] != weight.shape[1]:
        raise MinillmError(
            f"linear: input has {x.shape[-1]} features (shape {tuple(x.shape)}) but the weight "
            f"expects {weight.shape[1]} (weight shape {tuple(weight.shape)})"
        )
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)
