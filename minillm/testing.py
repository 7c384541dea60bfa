"""Gradient checking: autograd against central finite differences, in float64.

For f: inputs -> output (any shape) we check the gradient of the scalar L = sum(f(inputs) * r)
for a fixed random r, so every output element takes part. For each checked element x_i:

    numeric_i = (L(x_i + eps) - L(x_i - eps)) / (2 eps)          (error O(eps^2))

and the check passes when |autograd_i - numeric_i| <= atol + rtol * |numeric_i| for every
checked element, with atol = rtol * (largest gradient entry) unless given (so entries that are
tiny compared with the rest are not judged by a relative error they cannot meet). The returned
error err / (atol / rtol + |numeric|) is <= rtol exactly when every element passes.
"""

import numpy as np

from minillm.autograd import no_grad
from minillm.tensor import Tensor


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, *inputs, eps=1e-6, rtol=1e-6, atol=None, max_checks=200, seed=0, raise_on_fail=True):
    """Compare autograd gradients of ``fn(*inputs)`` with central differences.

    ``inputs``: Tensors (those with requires_grad=True are checked; they must be float64) or
    other values passed through. Checks up to ``max_checks`` randomly sampled elements per input
    (all of them when the input is small). Returns the largest relative error seen; raises
    GradcheckError naming the input, the index, the expected and the actual value on failure.
    """
    rng = np.random.default_rng(seed)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 inputs")

    out = fn(*inputs)
    r = rng.standard_normal(out.shape)  # fixed random projection of the output

    def loss_value():
        with no_grad():
            return float((fn(*inputs).data * r).sum())

    for i in checked:
        inputs[i].grad = None
    (out * Tensor(r)).sum().backward()

    worst = 0.0
    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        n = x.data.size
        idx = np.arange(n) if n <= max_checks else rng.choice(n, max_checks, replace=False)
        numeric = np.empty(len(idx))
        for j, k in enumerate(idx):
            # perturb in place through a multi-index, so strided (transposed) inputs work too
            pos = np.unravel_index(int(k), x.shape)
            old = x.data[pos]
            x.data[pos] = old + eps
            up = loss_value()
            x.data[pos] = old - eps
            down = loss_value()
            x.data[pos] = old
            numeric[j] = (up - down) / (2 * eps)
        got = analytic.reshape(-1)[idx]
        scale = max(np.abs(numeric).max(), np.abs(got).max(), 1e-12)
        tol_abs = atol if atol is not None else rtol * scale
        err = np.abs(got - numeric)
        bad = err > tol_abs + rtol * np.abs(numeric)
        rel = err / (tol_abs / rtol + np.abs(numeric))  # <= rtol exactly when the element passes
        worst = max(worst, float(rel.max()))
        if bad.any() and raise_on_fail:
            j = int(np.argmax(err - rtol * np.abs(numeric)))
            where = tuple(int(i) for i in np.unravel_index(int(idx[j]), x.shape))
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {tuple(x.shape)}) at index {where}: "
                f"finite differences give {numeric[j]:.10g}, autograd gives {got[j]:.10g} "
                f"(|diff| {err[j]:.3g}; {int(bad.sum())} of {len(idx)} checked elements off)"
            )
    return worst
