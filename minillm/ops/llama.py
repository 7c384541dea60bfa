"""The ops a Llama block adds to GPT-2's: RMSNorm, rotary position embeddings, SwiGLU.

Each is one Function (forward saves what backward needs; backward returns one gradient per
input) that calls its kernels through ``registry.get(name, like)`` (kernels/registry.py): the NumPy reference
(kernels/reference.py, where the math is written out), the Numba CPU kernels or the CUDA ones.
Their composite twins, built from primitive ops, are in tests/ops/test_llama_gradcheck.py,
which holds both to float64 finite differences.
"""

import numpy as np

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.kernels import registry
from minillm.tensor import Tensor


class RMSNorm(Function):
    """y = x / sqrt(mean(x^2) + eps) * w over the last axis (Zhang & Sennrich 2019).

    x: (..., C), w: (C,). Saves x (as rows) and one rrms per row for the backward.
    """

    def forward(self, x, w, eps=1e-5):
        x2 = x.reshape(-1, x.shape[-1])  # (N, C)
        y, rrms = registry.get("rms_norm_forward", x2)(x2, w, eps)
        self.saved = (x2, w, rrms, x.shape)
        return y.reshape(x.shape)

    def backward(self, dy):
        x2, w, rrms, shape = self.saved
        dx, dw = registry.get("rms_norm_backward", x2)(dy.reshape(x2.shape), x2, w, rrms)
        return dx.reshape(shape), dw


class RoPE(Function):
    """Rotary embedding of x: (B, H, T, D) by angles given as cos, sin: (T, D/2) or (B, T, D/2)
    (plain arrays, constants). A rotation's gradient is the rotation back: nothing is saved but
    the angles."""

    def forward(self, x, cos, sin, interleaved):
        self.saved = (cos, sin, interleaved)
        return registry.get("rope_forward", x)(x, cos, sin, interleaved)

    def backward(self, dy):
        cos, sin, interleaved = self.saved
        return (registry.get("rope_backward", dy)(dy, cos, sin, interleaved),)


class SwiGLU(Function):
    """y = silu(gate) * up (Shazeer 2020), elementwise; saves gate and up."""

    def forward(self, gate, up):
        self.saved = (gate, up)
        return registry.get("swiglu_forward", gate)(gate, up)

    def backward(self, dy):
        gate, up = self.saved
        return registry.get("swiglu_backward", gate)(dy, gate, up)


# ---------------------------------------------------------------------------- functions
def rms_norm(x, weight, eps=1e-5):
    """RMSNorm of ``x`` (..., C) with gain ``weight`` (C,)."""
    C = x.shape[-1]
    if tuple(weight.shape) != (C,):
        raise MinillmError(f"rms_norm weight has shape {tuple(weight.shape)}, expected ({C},)")
    return RMSNorm.apply(x, weight, eps=float(eps))


def rope(x, cos, sin, interleaved=False):
    """Rotate the pairs of each head of ``x`` (B, H, T, D) by the angles whose cos and sin are
    given (arrays of shape (T, D/2), or (B, T, D/2) for per-row positions; see
    ``minillm.kernels.reference.rope_cos_sin``). ``interleaved``: pairs (x[2i], x[2i+1]) as in
    GGUF/Meta checkpoints; otherwise (x[i], x[i + D/2]) as in Hugging Face's."""
    cos = cos.data if isinstance(cos, Tensor) else cos
    sin = sin.data if isinstance(sin, Tensor) else sin
    if x.ndim != 4 or x.shape[-1] % 2:
        raise MinillmError(f"rope needs x of shape (B, H, T, D) with D even, got {tuple(x.shape)}")
    B, _, T, D = x.shape
    want = ((T, D // 2), (B, T, D // 2), (1, T, D // 2))
    if tuple(cos.shape) not in want or tuple(sin.shape) != tuple(cos.shape):
        raise MinillmError(f"rope angles of shape {tuple(cos.shape)} / {tuple(sin.shape)} do not "
                           f"fit x of shape {tuple(x.shape)}; expected ({T}, {D // 2}) or "
                           f"({B}, {T}, {D // 2})")
    xp = backend.array_module(x.data)
    if backend.is_cupy(x.data):
        cos, sin = backend.to_device(cos, "cuda"), backend.to_device(sin, "cuda")
    angle_dtype = x.dtype if x.dtype.itemsize >= 4 else np.float32  # half x: float32 angles
    cos, sin = xp.asarray(cos, dtype=angle_dtype), xp.asarray(sin, dtype=angle_dtype)
    return RoPE.apply(x, cos=cos, sin=sin, interleaved=bool(interleaved))


def swiglu(gate, up):
    """silu(gate) * up for two tensors of one shape (the Llama MLP's activation)."""
    if tuple(gate.shape) != tuple(up.shape):
        raise MinillmError(f"swiglu needs gate and up of one shape, got {tuple(gate.shape)} "
                           f"and {tuple(up.shape)}")
    return SwiGLU.apply(gate, up)

