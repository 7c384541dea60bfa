"""Helpers shared by the op modules: lifting constants to Tensors, undoing broadcasting."""

import numpy as np

from minillm import backend
from minillm.errors import MinillmError
from minillm.tensor import Tensor


def lift(x, like):
    """``x`` as a Tensor; Python scalars take the dtype of ``like`` (so 2.0 * f32 stays f32)."""
    if isinstance(x, Tensor):
        return x
    xp = backend.array_module(like.data)
    if np.isscalar(x) or (isinstance(x, np.ndarray) and x.ndim == 0):
        like_float = backend.is_float_dtype(like.dtype)  # bfloat16 (ml_dtypes) is kind "V"
        if like_float or isinstance(x, (float, np.floating)):
            dtype = like.dtype if like_float else backend.DEFAULT_DTYPE
            return Tensor(xp.asarray(x, dtype=dtype))
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(xp.asarray(x) if backend.is_cupy(like.data) else x)


def unbroadcast(g, shape, dtype):
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``shape``.

    Broadcasting copies an input along those axes in the forward, so its gradient is the sum of
    the copies' gradients. The result is cast back to the input's dtype.
    """
    if g.shape != shape:
        lead = g.ndim - len(shape)
        if lead:
            g = g.sum(axis=tuple(range(lead)))
        stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        if stretched:
            g = g.sum(axis=stretched, keepdims=True)
    if g.dtype != dtype:
        g = g.astype(dtype)
    return g


def normalize_axes(axis, ndim):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise MinillmError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % max(ndim, 1))
    return tuple(sorted(set(out)))


def check_broadcast(a, b, opname):
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise MinillmError(
            f"{opname}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together"
        ) from None


def pick_dim(axis, dim, default=None):
    """The axis an op works along, named with NumPy's ``axis`` or PyTorch's ``dim`` (either, not
    two different values); ``default`` when neither is given."""
    if dim is None:
        return default if axis is None else axis
    if axis is not None and axis != dim and axis != default:
        raise MinillmError(f"got axis={axis} and dim={dim}; pass one of them")
    return dim


def pick_keepdims(keepdims, keepdim):
    """NumPy's ``keepdims`` or PyTorch's ``keepdim`` (either spelling, not two different values)."""
    if keepdim is None:
        return bool(keepdims)
    if keepdims and not keepdim:
        raise MinillmError("got keepdims=True and keepdim=False; pass one of them")
    return bool(keepdim)
