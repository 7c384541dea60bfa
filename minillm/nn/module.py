"""Module and Parameter: the containers PyTorch users know.

A Module registers the Parameters and sub-Modules assigned to its attributes, in assignment
order, so ``named_parameters()`` gives dotted names like ``h.0.attn.c_attn.weight``. A Parameter
that appears twice (a tied weight) is listed once, under the first name it was found by.
"""

from collections import OrderedDict

import numpy as np

from minillm import backend
from minillm.errors import MinillmError
from minillm.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a model weight: requires grad by default and is found by Modules."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise MinillmError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix=""):
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop(0)
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            stack[0:0] = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items()]

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self):
        seen = set()
        for mname, m in self.named_modules():
            for pname, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self, trainable_only=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def apply(self, fn):
        for m in self.modules():
            fn(m)
        return self

    def to(self, device=None, dtype=None):
        """Move/convert every parameter in place (the Parameter objects stay the same)."""
        for p in self.parameters():
            data = p.data
            if dtype is not None:
                data = data.astype(dtype)
            if device is not None:
                data = backend.to_device(data, device)
            p.data = data
            p.grad = None
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """name -> array (the parameters' own arrays, not copies), tied weights once."""
        return OrderedDict((n, p.data) for n, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters (cast to each parameter's dtype).

        With strict=True, missing keys, unexpected keys and shape mismatches are one error that
        lists them all. Returns (missing, unexpected) like PyTorch.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [
            f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {tuple(own[k].shape)}"
            for k in own
            if k in state and tuple(np.shape(state[k])) != tuple(own[k].shape)
        ]
        if mismatched or (strict and (missing or unexpected)):
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
            if mismatched:
                parts.append("shape mismatches: " + "; ".join(mismatched[:10]))
            raise MinillmError("the weights do not fit this model (" + " | ".join(parts) + ")")
        for k, p in own.items():
            if k in state:
                arr = state[k]
                if backend.is_cupy(p.data):
                    arr = backend.to_device(np.asarray(arr), "cuda")
                p.data = arr.astype(p.data.dtype, copy=True) if hasattr(arr, "astype") else np.array(arr, dtype=p.data.dtype)
        return missing, unexpected

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")

    def extra_repr(self):
        return ""


class ModuleList(Module):
    """A list of modules, registered as ``0``, ``1``, ... (for the transformer's blocks)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m):
        setattr(self, str(len(self._modules)), m)
        return self

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return mods[i] if isinstance(i, int) else ModuleList(mods[i])


class Sequential(ModuleList):
    """Modules applied in order: ``Sequential(Linear(3, 4), ReLU(), Linear(4, 2))`` as in
    PyTorch (a single list of modules works too)."""

    def __init__(self, *modules):
        if len(modules) == 1 and not isinstance(modules[0], Module):
            modules = modules[0]
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
