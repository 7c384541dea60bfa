"""Reverse-mode automatic differentiation: Function, the graph, backward, no_grad.

Each differentiable op is a subclass of ``Function``: ``forward`` computes the output array from
input arrays and saves what ``backward`` needs; ``backward`` takes the gradient of the output and
returns one gradient per input (None where an input needs none). ``Function.apply`` runs the
forward on Tensors and, when any input requires grad, records the node in the graph.

``backward`` walks the graph in reverse topological order (iteratively, so deep graphs do not hit
Python's recursion limit), accumulates the gradient of every tensor used more than once, stores
gradients on leaf tensors in ``.grad`` (adding to what is there, as PyTorch does), and frees the
saved arrays of each node once it is done, unless ``retain_graph=True``.
"""

import functools

from numpy import asarray as _np_asarray
from numpy import generic as _np_generic

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) that stops graph recording: ops inside build no graph."""

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        return wrapper


class enable_grad(no_grad):
    """Turn graph recording back on inside a no_grad block."""

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = True


class inference_mode(no_grad):
    """PyTorch's ``inference_mode``: here the same as ``no_grad`` (minillm has no separate
    cheaper mode). ``inference_mode(False)`` records the graph as usual."""

    def __init__(self, mode=True):
        self.mode = bool(mode)

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        if self.mode:
            _grad_enabled = False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(self.mode):
                return fn(*args, **kwargs)

        return wrapper


_FREED = object()  # marks a node whose saved arrays were released by a backward


class Function:
    """One differentiable op. Subclasses implement forward(*arrays, **params) and backward(dy)."""

    __slots__ = ("parents", "needs_input_grad", "saved", "__weakref__")

    def __repr__(self):
        return f"<{type(self).__name__}Backward>"  # PyTorch prints grad_fn as <MulBackward0>

    def save(self, *arrays):
        self.saved = arrays

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on Tensors ``inputs``; ``params`` are plain (non-differentiable) values."""
        from minillm.tensor import Tensor

        fn = cls.__new__(cls)
        fn.saved = ()
        out = fn.forward(*[t.data for t in inputs], **params)
        if isinstance(out, _np_generic):  # NumPy reductions of 0-d results return scalars
            out = _np_asarray(out)
        requires = _grad_enabled and any(t.requires_grad for t in inputs)
        result = Tensor.__new__(Tensor)
        result.data = out
        result.grad = None
        result.requires_grad = requires
        result._retain = False
        if requires:
            fn.parents = inputs
            fn.needs_input_grad = tuple(t.requires_grad for t in inputs)
            result._ctx = fn
        else:
            result._ctx = None
        return result


def _topological_order(root):
    """Tensors reachable from root that require grad, parents before children."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        ctx = t._ctx
        if ctx is not None:
            for p in ctx.parents:
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))
    return order


def backward(root, grad, retain_graph=False):
    """Propagate ``grad`` (an array shaped like root) from ``root`` to every leaf that needs it."""
    grads = {id(root): grad}
    for t in reversed(_topological_order(root)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        ctx = t._ctx
        if ctx is None or t._retain:
            # Leaves keep their gradient (a fresh array: ops may pass one array to several
            # inputs, and optimizers scale .grad in place).
            t.grad = g.copy() if t.grad is None else t.grad + g
            if ctx is None:
                continue
        if ctx.saved is _FREED:
            raise RuntimeError(
                "trying to backward through the graph a second time: its saved arrays were "
                "freed by the first backward; pass retain_graph=True to the first call"
            )
        in_grads = ctx.backward(g)
        for p, pg, need in zip(ctx.parents, in_grads, ctx.needs_input_grad):
            if not need or pg is None:
                continue
            prev = grads.get(id(p))
            grads[id(p)] = pg if prev is None else prev + pg
        if not retain_graph:
            ctx.saved = _FREED
