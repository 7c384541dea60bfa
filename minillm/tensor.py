"""Tensor: an n-dimensional array (NumPy, or CuPy on the GPU) that can record a graph for autograd.

A Tensor holds ``data`` (the array), ``requires_grad``, ``grad`` (an array, filled by backward on
leaves) and ``_ctx`` (the Function that produced it, None for leaves). Operators and methods
delegate to the differentiable ops in ``minillm.ops``; this file only wires them up, the way
PyTorch users expect (``a @ b``, ``x.sum(-1, keepdims=True)``, ``x.view(B, T, C)``, ...).

Both spellings work: NumPy's ``axis=``/``keepdims=`` and PyTorch's ``dim=``/``keepdim=``.
``size()`` is PyTorch's (the shape, or one dimension's length); the element count is
``numel()``. ``max(dim=...)`` and ``min(dim=...)`` return PyTorch's (values, indices) pair;
with ``axis=`` (or positionally) they return the values, as NumPy does.
"""

import numpy as np

from minillm import autograd, backend
from minillm.errors import MinillmError


def _as_array(data, dtype=None):
    if backend.is_cupy(data):
        return data if dtype is None else data.astype(dtype, copy=False)
    if isinstance(data, np.ndarray):
        return data if dtype is None else data.astype(dtype, copy=False)
    arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":  # Python floats become float32, as in PyTorch
        return arr.astype(backend.DEFAULT_DTYPE)
    if arr.dtype.kind in "iu" and arr.dtype != np.int64:
        return arr.astype(np.int64)
    return arr


class Tensor:
    __slots__ = ("data", "requires_grad", "grad", "_ctx", "_retain", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to the Tensor's reflected operator

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data, dtype)
        self.grad = None
        self._ctx = None
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------------ basic attributes
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def size(self, dim=None):
        """The shape (PyTorch's ``size()``), or the length of dimension ``dim``; the number of
        elements is ``numel()``."""
        if dim is None:
            return tuple(self.data.shape)
        if not -self.ndim <= dim < self.ndim:
            raise MinillmError(f"dimension {dim} is out of range for a tensor of shape {self.shape}")
        return self.data.shape[dim]

    def numel(self):
        """Number of elements (NumPy's ``.size``)."""
        return self.data.size

    def dim(self):
        """Number of dimensions (PyTorch's ``dim()``; ``ndim`` is the same)."""
        return self.data.ndim

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        """The op node (a ``Function``) that produced this tensor in the graph; None for a leaf
        and for a result computed without grad."""
        return self._ctx

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), precision=4, separator=", ")
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{grad})"

    # ------------------------------------------------------------------ autograd
    def requires_grad_(self, flag=True):
        if flag and not backend.is_float_dtype(self.data.dtype):
            raise MinillmError(
                f"only floating-point tensors can require grad; this one is {self.data.dtype}"
            )
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward (as in PyTorch)."""
        self._retain = True
        return self

    def backward(self, grad=None, retain_graph=False):
        """Compute gradients of this tensor w.r.t. every leaf that requires grad.

        ``grad`` defaults to 1 for a one-element tensor; other shapes must pass it explicitly.
        """
        if not self.requires_grad:
            raise MinillmError(
                "backward() on a tensor that does not require grad (no input of the graph "
                "requires grad, or it was computed under no_grad())"
            )
        xp = backend.array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise MinillmError(
                    f"backward() needs an explicit grad for a non-scalar tensor of shape "
                    f"{self.shape}; call .sum() first or pass grad="
                )
            g = xp.ones_like(self.data)
        else:
            g = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if g.shape != self.shape:
                raise MinillmError(
                    f"backward() grad has shape {g.shape} but the tensor has shape {self.shape}"
                )
        autograd.backward(self, g, retain_graph=retain_graph)

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    # ------------------------------------------------------------------ conversion
    def item(self):
        if self.data.size != 1:
            raise MinillmError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed; shares memory on CPU)."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def to(self, device=None, dtype=None):
        """A copy on ``device`` ('cpu' or 'cuda') and/or of ``dtype``; graph-connected for dtype."""
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = ops.cast(out, dtype)
        if device is not None and backend.check_device(device) != self.device:
            t = Tensor(backend.to_device(out.data, device))
            t.requires_grad = out.requires_grad and out.is_leaf
            out = t
        return out

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def astype(self, dtype):
        return self.to(dtype=dtype)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, o):
        return ops.add(self, o)

    def __radd__(self, o):
        return ops.add(o, self)

    def __sub__(self, o):
        return ops.sub(self, o)

    def __rsub__(self, o):
        return ops.sub(o, self)

    def __mul__(self, o):
        return ops.mul(self, o)

    def __rmul__(self, o):
        return ops.mul(o, self)

    def __truediv__(self, o):
        return ops.div(self, o)

    def __rtruediv__(self, o):
        return ops.div(o, self)

    def __neg__(self):
        return ops.neg(self)

    def __pow__(self, o):
        return ops.pow(self, o)

    def __rpow__(self, o):
        return ops.pow(o, self)

    def __matmul__(self, o):
        return ops.matmul(self, o)

    def __rmatmul__(self, o):
        return ops.matmul(o, self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    # comparisons give boolean tensors outside the graph
    def _cmp(self, o, fn):
        return Tensor(fn(self.data, o.data if isinstance(o, Tensor) else o))

    def __lt__(self, o):
        return self._cmp(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._cmp(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._cmp(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._cmp(o, lambda a, b: a >= b)

    def __eq__(self, o):
        return self._cmp(o, lambda a, b: a == b)

    def __ne__(self, o):
        return self._cmp(o, lambda a, b: a != b)

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ methods
    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def sqrt(self):
        return ops.sqrt(self)

    def tanh(self):
        return ops.tanh(self)

    def relu(self):
        return ops.relu(self)

    def gelu(self):
        return ops.gelu(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def abs(self):
        return ops.abs(self)

    def pow(self, exponent):
        return ops.pow(self, exponent)

    def square(self):
        return ops.square(self)

    def clamp(self, min=None, max=None):
        return ops.clamp(self, min, max)

    clip = clamp

    def matmul(self, other):
        return ops.matmul(self, other)

    def clone(self):
        """A copy with its own memory that stays in the graph (gradients flow through it)."""
        return ops.clone(self)

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.sum(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.min(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def var(self, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None,
            unbiased=None):
        return ops.var(self, axis, keepdims, correction, dim=dim, keepdim=keepdim,
                       unbiased=unbiased)

    def std(self, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None,
            unbiased=None):
        return ops.std(self, axis, keepdims, correction, dim=dim, keepdim=keepdim,
                       unbiased=unbiased)

    def norm(self, p=2, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.norm(self, p, axis, keepdims, dim=dim, keepdim=keepdim)

    def softmax(self, axis=None, *, dim=None):
        return ops.softmax(self, axis, dim=dim)

    def log_softmax(self, axis=None, *, dim=None):
        return ops.log_softmax(self, axis, dim=dim)

    def reshape(self, *shape):
        return ops.reshape(self, *shape)

    def view(self, *shape):
        return ops.reshape(self, *shape)

    def flatten(self, start=0, end=-1, *, start_dim=None, end_dim=None):
        return ops.flatten(self, start if start_dim is None else start_dim,
                           end if end_dim is None else end_dim)

    def transpose(self, a=-2, b=-1):
        return ops.transpose(self, a, b)

    def permute(self, *axes):
        return ops.permute(self, *axes)

    @property
    def T(self):
        return ops.permute(self, *reversed(range(self.ndim)))

    def t(self):
        """The transpose of a matrix (PyTorch's ``t()``: 0-D and 1-D tensors come back as they are)."""
        if self.ndim > 2:
            raise MinillmError(f"t() takes a tensor of at most 2 dimensions, got shape "
                               f"{self.shape}; use transpose(dim0, dim1) or permute")
        return self if self.ndim < 2 else ops.transpose(self, 0, 1)

    def unsqueeze(self, axis=None, *, dim=None):
        return ops.unsqueeze(self, _dim(axis, dim))

    def squeeze(self, axis=None, *, dim=None):
        return ops.squeeze(self, dim if axis is None else axis)

    def expand(self, *shape):
        return ops.expand(self, *shape)

    def contiguous(self):
        return self

    def split(self, size_or_sections, axis=None, *, dim=None):
        return ops.split(self, size_or_sections, axis, dim=dim)

    def masked_fill(self, mask, value):
        return ops.masked_fill(self, mask, value)

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Index of the largest value (over all elements flattened, or along one axis)."""
        return self._arg("argmax", axis, keepdims, dim, keepdim)

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._arg("argmin", axis, keepdims, dim, keepdim)

    def _arg(self, name, axis, keepdims, dim, keepdim):
        axis = _dim(axis, dim)
        keep = bool(keepdims or keepdim)
        idx = getattr(self.data, name)(axis=axis)
        if keep:
            xp = backend.array_module(self.data)
            idx = xp.expand_dims(idx, axis) if axis is not None else idx.reshape((1,) * self.ndim)
        return Tensor(backend.array_module(self.data).asarray(idx, dtype=np.int64))


def tensor(data, requires_grad=False, dtype=None):
    """Make a Tensor (PyTorch's ``torch.tensor``): floats default to float32, ints to int64."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=None, requires_grad=False):
    return Tensor(np.zeros(_shape(shape), dtype or backend.DEFAULT_DTYPE), requires_grad)


def ones(*shape, dtype=None, requires_grad=False):
    return Tensor(np.ones(_shape(shape), dtype or backend.DEFAULT_DTYPE), requires_grad)


def randn(*shape, dtype=None, requires_grad=False):
    """Standard normal samples from minillm's seeded generator (see ``manual_seed``)."""
    data = backend.rng().standard_normal(_shape(shape)).astype(dtype or backend.DEFAULT_DTYPE)
    return Tensor(data, requires_grad)


def rand(*shape, dtype=None, requires_grad=False):
    """Uniform samples in [0, 1) from minillm's seeded generator (see ``manual_seed``)."""
    data = backend.rng().random(_shape(shape)).astype(dtype or backend.DEFAULT_DTYPE)
    return Tensor(data, requires_grad)


def full(shape, fill_value, dtype=None, requires_grad=False):
    """A tensor of ``shape`` filled with ``fill_value`` (float32 unless ``dtype``, as PyTorch
    does for a float; an int fill gives int64)."""
    if dtype is None:
        dtype = np.int64 if isinstance(fill_value, (int, np.integer)) and not isinstance(
            fill_value, bool) else backend.DEFAULT_DTYPE
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return Tensor(np.full(shape, fill_value, dtype=dtype), requires_grad)


def _like(fill, t, dtype, requires_grad):
    """An array shaped like ``t`` (a Tensor or array), on its device, of its dtype by default."""
    data = t.data if isinstance(t, Tensor) else t
    xp = backend.array_module(data)
    return Tensor(fill(xp, data.shape, dtype or data.dtype), requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return _like(lambda xp, s, d: xp.zeros(s, d), t, dtype, requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return _like(lambda xp, s, d: xp.ones(s, d), t, dtype, requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return _like(lambda xp, s, d: xp.full(s, fill_value, d), t, dtype, requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    """Standard normal samples shaped like ``t`` (drawn on the CPU, moved to ``t``'s device)."""
    data = t.data if isinstance(t, Tensor) else t
    out = randn(*data.shape, dtype=dtype or data.dtype)
    return Tensor(backend.to_device(out.data, backend.device_of(data)), requires_grad)


def rand_like(t, dtype=None, requires_grad=False):
    data = t.data if isinstance(t, Tensor) else t
    out = rand(*data.shape, dtype=dtype or data.dtype)
    return Tensor(backend.to_device(out.data, backend.device_of(data)), requires_grad)


def arange(*args, dtype=None):
    return Tensor(np.arange(*args, dtype=dtype))


def _dim(axis, dim):
    """``axis`` or PyTorch's ``dim`` (for the methods that are not ops)."""
    if axis is not None and dim is not None and axis != dim:
        raise MinillmError(f"got axis={axis} and dim={dim}; pass one of them")
    return axis if dim is None else dim


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


from minillm import ops  # noqa: E402  (ops needs Tensor defined first)
