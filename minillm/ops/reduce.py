"""Reductions over any set of axes, with keepdims: sum, mean, max, var.

The backward of a reduction puts the reduced axes back (as size-1 axes) and broadcasts the
gradient over them.
"""

from minillm import backend
from minillm.autograd import Function
from minillm.ops._util import normalize_axes


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


def sum(x, axis=None, keepdims=False):
    return Sum.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def max(x, axis=None, keepdims=False):
    return Max.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def var(x, axis=None, keepdims=False, correction=1):
    """Variance over ``axis``; ``correction=1`` (the default, as in PyTorch) divides by n - 1,
    ``correction=0`` by n (NumPy's default, and what LayerNorm uses)."""
    return Var.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims, correction=correction)
