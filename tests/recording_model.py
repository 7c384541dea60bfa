"""A model wrapper for the tests of what the generation code feeds a model (prefill once, then
one position a step; batched prefill): records the shape of every call (a Llama's packed
prefill: the number of prompts and their positions in all)."""

import numpy as np


class Recording:
    """Wraps a model and records the (batch, time) shape of every call in ``shapes``; ``fed``
    lists the positions (time) of each call."""

    def __init__(self, model):
        self.model, self.shapes = model, []

    def __getattr__(self, name):
        attr = getattr(self.model, name)
        if name != "prefill_packed":
            return attr

        def packed(prompts, kv_cache):  # recorded as (prompts, their positions end to end)
            self.shapes.append((len(prompts), sum(len(p) for p in prompts)))
            return attr(prompts, kv_cache)
        return packed

    def __call__(self, idx, **kw):
        self.shapes.append(np.asarray(idx).shape)
        return self.model(idx, **kw)

    @property
    def fed(self):
        return [s[1] for s in self.shapes]
