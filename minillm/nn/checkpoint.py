"""Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"):
keep a block's input, not its activations, and recompute them in the backward pass.

    y = checkpoint(lambda t: block(t, rope=rope), x, block.parameters())

The forward runs the block without recording a graph, so none of its intermediate arrays stays
alive; the op saves only x (and the random generator's state, so a dropout inside draws the same
mask again). The backward runs the block once more on x, this time recording, backpropagates dy
through that small graph, and hands back dx and the gradients of the block's trainable
parameters, which the outer backward accumulates as for any op. Memory: one (B, T, C) input per
block plus the activations of the one block being recomputed, instead of every block's; cost:
one more forward of each block per step (about a third more compute).

The result is the same as without checkpointing: the recomputed forward runs the same kernels on
the same inputs (tests/nn/test_checkpoint.py compares losses and every gradient in float64).
"""

from minillm import backend
from minillm.autograd import Function, enable_grad, no_grad
from minillm.tensor import Tensor


class Checkpoint(Function):
    """y = fn(x), recomputed in the backward. Inputs: x and the trainable parameters fn uses
    (listed so the graph knows the op depends on them); params: fn, the parameter Tensors."""

    def forward(self, x, *param_arrays, fn=None, params=(), rng_state=None):
        with no_grad():
            y = fn(Tensor(x)).data
        self.saved = (x, fn, params, rng_state)
        return y

    def backward(self, dy):
        x, fn, params, rng_state = self.saved
        held = [p.grad for p in params]  # what the outer backward has accumulated so far
        for p in params:
            p.grad = None
        xt = Tensor(x, requires_grad=bool(self.needs_input_grad[0]))
        now = backend.get_rng_state()
        try:
            backend.set_rng_state(rng_state)  # the forward's dropout masks again
            with enable_grad():
                y = fn(xt)
            if y.requires_grad:
                y.backward(dy)
            grads = (xt.grad,) + tuple(p.grad for p in params)
        finally:
            backend.set_rng_state(now)
            for p, g in zip(params, held):
                p.grad = g
        return grads


def checkpoint(fn, x, params):
    """fn(x) with its activations recomputed in the backward; ``params``: the Parameters fn
    reads (only those that require grad are tracked)."""
    params = tuple(p for p in params if p.requires_grad)
    return Checkpoint.apply(x, *params, fn=fn, params=params,
                            rng_state=backend.get_rng_state())
