"""Shape ops: reshape/view, permute/transpose, expand, getitem, concat, stack, split.

They move or copy elements without arithmetic, so each backward moves the gradient back the
same way: reshape back, permute by the inverse permutation, scatter-add into the source.
"""

import numpy as np

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.ops._util import normalize_axes, pick_dim, unbroadcast
from minillm.tensor import Tensor


class Reshape(Function):
    """y = x with a new shape (same elements, row-major order);  dx = dy reshaped back."""

    def forward(self, x, shape):
        self.saved = (x.shape,)
        return x.reshape(shape)

    def backward(self, dy):
        return (dy.reshape(self.saved[0]),)


class Permute(Function):
    """y = x with its axes reordered;  dx = dy with the inverse order."""

    def forward(self, x, axes):
        self.saved = (tuple(int(a) for a in np.argsort(axes)),)  # ints: CuPy takes no host array
        return x.transpose(axes)

    def backward(self, dy):
        return (dy.transpose(self.saved[0]),)


class Expand(Function):
    """y = x broadcast to ``shape``;  dx = dy summed over the broadcast axes."""

    def forward(self, x, shape):
        self.saved = (x.shape,)
        return backend.array_module(x).broadcast_to(x, shape)

    def backward(self, dy):
        return (unbroadcast(dy, self.saved[0], dy.dtype),)


class GetItem(Function):
    """y = x[index] (ints, slices, None, Ellipsis, integer/bool arrays);
    dx = zeros with dy scatter-added at ``index`` (repeated indices add up)."""

    def forward(self, x, index):
        if backend.is_cupy(x) and _has_array(index):
            index = _device_index(index)  # once: the gather and the scatter-add use it
        self.saved = (x.shape, x.dtype, index)
        return x[index]

    def backward(self, dy):
        shape, dtype, index = self.saved
        xp = backend.array_module(dy)
        dx = xp.zeros(shape, dtype=dtype)
        if _has_array(index):
            backend.scatter_add(dx, index, dy)  # advanced indices may repeat: accumulate
        else:
            dx[index] = dy  # basic indexing picks each element at most once
        return (dx,)


class Concat(Function):
    """y = concatenation of the inputs along ``axis``;  each dx = its slice of dy."""

    def forward(self, *xs, axis):
        self.saved = (axis, np.cumsum([x.shape[axis] for x in xs])[:-1])
        return backend.array_module(xs[0]).concatenate(xs, axis=axis)

    def backward(self, dy):
        axis, cuts = self.saved
        return tuple(backend.array_module(dy).split(dy, cuts, axis=axis))


class Stack(Function):
    """y = the inputs stacked along a new ``axis``;  each dx = dy taken at its position."""

    def forward(self, *xs, axis):
        self.saved = (axis, len(xs))
        return backend.array_module(xs[0]).stack(xs, axis=axis)

    def backward(self, dy):
        axis, n = self.saved
        return tuple(dy.take(i, axis=axis) for i in range(n))


def _has_array(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in items)


def _device_index(index):
    """``index`` with its host integer/bool arrays moved to the GPU (CuPy's scatter-add takes
    device indices only)."""
    items = index if isinstance(index, tuple) else (index,)
    moved = tuple(backend.to_device(i, "cuda") if isinstance(i, np.ndarray) else i for i in items)
    return moved if isinstance(index, tuple) else moved[0]


def _index_data(index):
    """Tensors inside an index become their arrays (integer indexing with a Tensor)."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


# ---------------------------------------------------------------------------- functions
def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    shape = _shape_arg(shape)
    try:
        return Reshape.apply(x, shape=shape)
    except ValueError:
        raise MinillmError(
            f"cannot reshape a tensor of shape {tuple(x.shape)} ({x.numel()} elements) into {shape}"
        ) from None


view = reshape


def flatten(x, start=0, end=-1):
    nd = x.ndim
    start, end = start % nd, end % nd
    n = 1
    for s in x.shape[start : end + 1]:
        n *= s
    return reshape(x, x.shape[:start] + (n,) + x.shape[end + 1 :])


def permute(x, *axes):
    axes = _shape_arg(axes)
    if sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise MinillmError(f"permute axes {axes} are not a permutation of {x.ndim} axes")
    return Permute.apply(x, axes=tuple(a % x.ndim for a in axes))


def transpose(x, a=-2, b=-1):
    """Swap two axes (PyTorch's ``transpose(dim0, dim1)``)."""
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(x, axes=tuple(axes))


def unsqueeze(x, axis):
    axis = axis % (x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x, axis=None):
    if axis is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    axes = normalize_axes(axis, x.ndim)
    for a in axes:
        if x.shape[a] != 1:
            raise MinillmError(f"cannot squeeze axis {a} of size {x.shape[a]} (shape {x.shape})")
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def expand(x, *shape):
    shape = _shape_arg(shape)
    shape = tuple(x.shape[i - (len(shape) - x.ndim)] if s == -1 else s for i, s in enumerate(shape))
    try:
        return Expand.apply(x, shape=shape)
    except ValueError:
        raise MinillmError(f"cannot expand a tensor of shape {tuple(x.shape)} to {shape}") from None


def getitem(x, index):
    index = _index_data(index)
    try:
        return GetItem.apply(x, index=index)
    except IndexError as e:
        raise MinillmError(f"bad index for a tensor of shape {tuple(x.shape)}: {e}") from None


def cat(tensors, axis=None, *, dim=None):
    """Join tensors along ``axis`` or ``dim`` (either spelling; axis 0 by default)."""
    tensors = list(tensors)
    if not tensors:
        raise MinillmError("cat needs at least one tensor")
    axis = pick_dim(axis, dim, 0) % tensors[0].ndim
    ref = tensors[0].shape
    for t in tensors[1:]:
        if t.ndim != len(ref) or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref)) if i != axis):
            raise MinillmError(
                f"cat along axis {axis}: shapes {tuple(ref)} and {tuple(t.shape)} differ "
                f"outside that axis"
            )
    return Concat.apply(*tensors, axis=axis)


concat = cat


def stack(tensors, axis=None, *, dim=None):
    """Stack same-shaped tensors along a new ``axis`` or ``dim`` (axis 0 by default)."""
    axis = pick_dim(axis, dim, 0)
    tensors = list(tensors)
    if not tensors:
        raise MinillmError("stack needs at least one tensor")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise MinillmError(f"stack needs tensors of one shape, got {sorted(shapes)}")
    return Stack.apply(*tensors, axis=axis % (tensors[0].ndim + 1))


def split(x, size_or_sections, axis=None, *, dim=None):
    """Split into pieces along ``axis``: an int gives pieces of that size (the last may be
    smaller), a list gives the sizes (PyTorch's ``split``; ``dim`` is ``axis``, the last by
    default). Each piece is a getitem."""
    axis = pick_dim(axis, dim, -1) % x.ndim
    n = x.shape[axis]
    if isinstance(size_or_sections, int):
        if size_or_sections <= 0:
            raise MinillmError(f"split size must be positive, got {size_or_sections}")
        sizes = [min(size_or_sections, n - s) for s in range(0, n, size_or_sections)]
    else:
        sizes = list(size_or_sections)
        if sum(sizes) != n:
            raise MinillmError(f"split sizes {sizes} add up to {sum(sizes)}, not {n} (axis {axis})")
    out, start = [], 0
    for s in sizes:
        index = (slice(None),) * axis + (slice(start, start + s),)
        out.append(GetItem.apply(x, index=index))
        start += s
    return out
