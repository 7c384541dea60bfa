"""Reductions over any set of axes, with keepdims: sum, mean, max, var (Functions), and min,
std, norm composed from them.

The backward of a reduction puts the reduced axes back (as size-1 axes) and broadcasts the
gradient over them.
"""

from typing import NamedTuple

import numpy as np

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.ops._util import normalize_axes, pick_dim, pick_keepdims
from minillm.tensor import Tensor


def _expand(dy, axes, keepdims):
    """dy with the reduced axes restored as size 1, so it broadcasts against the input."""
    if keepdims or not axes:
        return dy
    xp = backend.array_module(dy)
    return xp.expand_dims(dy, axes)


class Sum(Function):
    """y = sum of x over ``axes``;  dx = dy broadcast back over those axes."""

    def forward(self, x, axes, keepdims):
        self.saved = (x.shape, axes, keepdims)
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, dy):
        shape, axes, keepdims = self.saved
        xp = backend.array_module(dy)
        return (xp.broadcast_to(_expand(dy, axes, keepdims), shape),)


class Mean(Function):
    """y = mean of x over ``axes`` (n elements each);  dx = dy / n broadcast back."""

    def forward(self, x, axes, keepdims):
        n = 1
        for a in axes:
            n *= x.shape[a]
        self.saved = (x.shape, axes, keepdims, n)
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, dy):
        shape, axes, keepdims, n = self.saved
        xp = backend.array_module(dy)
        return (xp.broadcast_to(_expand(dy, axes, keepdims) / n, shape),)


class Max(Function):
    """y = max of x over ``axes``;  dx = dy at the maximal entries (shared equally by ties)."""

    def forward(self, x, axes, keepdims):
        y = x.max(axis=axes, keepdims=True)
        self.saved = (x, y, axes, keepdims)
        return y if keepdims else y.squeeze(axis=axes)

    def backward(self, dy):
        x, y, axes, keepdims = self.saved
        hit = (x == y).astype(x.dtype)
        hit /= hit.sum(axis=axes, keepdims=True)
        return (hit * _expand(dy, axes, keepdims),)


class Var(Function):
    """y = sum((x - mean)^2) / (n - correction) over ``axes``;
    dx = dy * 2 (x - mean) / (n - correction)."""

    def forward(self, x, axes, keepdims, correction):
        n = 1
        for a in axes:
            n *= x.shape[a]
        xc = x - x.mean(axis=axes, keepdims=True)
        denom = n - correction
        self.saved = (xc, axes, keepdims, denom)
        return (xc * xc).sum(axis=axes, keepdims=keepdims) / denom

    def backward(self, dy):
        xc, axes, keepdims, denom = self.saved
        return (_expand(dy, axes, keepdims) * (2.0 / denom) * xc,)


def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Sum over ``axis`` (NumPy) or ``dim`` (PyTorch); all axes when neither is given."""
    axes = normalize_axes(pick_dim(axis, dim), x.ndim)
    return Sum.apply(x, axes=axes, keepdims=pick_keepdims(keepdims, keepdim))


def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    axes = normalize_axes(pick_dim(axis, dim), x.ndim)
    return Mean.apply(x, axes=axes, keepdims=pick_keepdims(keepdims, keepdim))


def max(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """The largest values over ``axis`` (a Tensor, as NumPy's ``max``). With PyTorch's ``dim=``
    keyword it is PyTorch's ``max(dim)``: a (values, indices) pair along that one axis."""
    keepdims = pick_keepdims(keepdims, keepdim)
    if dim is not None:
        return _with_indices(max, x, pick_dim(axis, dim), keepdims, "argmax")
    return Max.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def min(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """The smallest values over ``axis``: -max(-x), so its gradient is max's (shared by ties).
    With ``dim=``, PyTorch's (values, indices) pair, as ``max``."""
    keepdims = pick_keepdims(keepdims, keepdim)
    if dim is not None:
        return _with_indices(min, x, pick_dim(axis, dim), keepdims, "argmin")
    return -max(-x, axis, keepdims)


class ValuesIndices(NamedTuple):
    """What PyTorch's ``max(dim)`` and ``min(dim)`` return: ``values`` (a Tensor in the graph)
    and ``indices`` (an int64 Tensor outside it)."""

    values: Tensor
    indices: Tensor


def _with_indices(reduce, x, dim, keepdims, arg):
    if not isinstance(dim, (int, np.integer)):
        raise MinillmError(f"max/min with dim= takes one axis (PyTorch's rule), got {dim}")
    (axis,) = normalize_axes(dim, x.ndim)
    idx = getattr(x.data, arg)(axis=axis)
    if keepdims:
        idx = backend.array_module(idx).expand_dims(idx, axis)
    return ValuesIndices(reduce(x, axis, keepdims), Tensor(idx.astype(np.int64)))


def var(x, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None, unbiased=None):
    """Variance over ``axis``; ``correction=1`` (the default, as in PyTorch) divides by n - 1,
    ``correction=0`` by n (NumPy's default, and what LayerNorm uses). PyTorch's older
    ``unbiased=False`` is ``correction=0``."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    axes = normalize_axes(pick_dim(axis, dim), x.ndim)
    return Var.apply(x, axes=axes, keepdims=pick_keepdims(keepdims, keepdim), correction=correction)


def std(x, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None, unbiased=None):
    """Standard deviation: sqrt(var) with var's arguments (composed; autograd derives it)."""
    return var(x, axis, keepdims, correction, dim=dim, keepdim=keepdim, unbiased=unbiased).sqrt()


def norm(x, p=2, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """The vector p-norm over ``axis`` (all elements by default), composed from primitives:
    p=2 (or "fro"): sqrt(sum x^2); p=1: sum |x|; p=inf: max |x|; other p > 0:
    (sum |x|^p)^(1/p). Its gradient is undefined where the norm is 0 (as in calculus)."""
    axis = pick_dim(axis, dim)
    keepdims = pick_keepdims(keepdims, keepdim)
    if p in (2, "fro"):
        return (x * x).sum(axis, keepdims).sqrt()
    if p == 1:
        return x.abs().sum(axis, keepdims)
    if p == float("inf"):
        return max(x.abs(), axis, keepdims)
    if not isinstance(p, (int, float)) or not p > 0:
        raise MinillmError(f"norm order p must be a positive number, inf or 'fro', got {p!r}")
    return (x.abs() ** p).sum(axis, keepdims) ** (1.0 / p)
