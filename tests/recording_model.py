"""A model wrapper for the tests of what the generation code feeds a model (prefill once, then
one position a step; batched prefill): records the shape of every call."""

import numpy as np


class Recording:
    """Wraps a model and records the (batch, time) shape of every call in ``shapes``; ``fed``
    lists the positions (time) of each call."""

    def __init__(self, model):
        self.model, self.shapes = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, idx, **kw):
        self.shapes.append(np.asarray(idx).shape)
        return self.model(idx, **kw)

    @property
    def fed(self):
        return [s[1] for s in self.shapes]
