"""Optimizers (SGD with momentum, AdamW), gradient clipping and learning-rate schedules
(``optim.lr_scheduler``: the schedulers, in minillm/lr_scheduler.py).

Optimizers take parameters or parameter groups (a list of dicts with "params" and per-group
overrides such as "weight_decay"), as in PyTorch, so that biases, LayerNorm weights and
embeddings can be left out of weight decay (``gpt_param_groups``, nanoGPT's rule: decay only
tensors with 2 or more dimensions that are matmul weights).

AdamW's update runs as one kernel per parameter (kernels ``adamw_step``: reference or Numba).
"""

import numpy as np

from minillm import (
    backend,
    lr_scheduler,  # noqa: F401  (PyTorch's torch.optim.lr_scheduler)
)
from minillm.errors import ConfigError
from minillm.kernels import registry
from minillm.lr_scheduler import cosine_lr  # noqa: F401  (nanoGPT's schedule as a function)
from minillm.nn import utils as nn_utils


class Optimizer:
    defaults = {}

    def __init__(self, params, **defaults):
        self.defaults = {**type(self).defaults, **defaults}
        params = list(params)
        if not params:
            raise ConfigError("the optimizer got no parameters")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of arrays
        self.step_count = 0

    def zero_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def _params(self):
        for g in self.param_groups:
            for p in g["params"]:
                yield g, p

    # state as named arrays (for optimizer.safetensors) keyed by parameter order
    def state_arrays(self):
        out = {}
        for i, (_, p) in enumerate(self._params()):
            for k, arr in self.state.get(id(p), {}).items():
                out[f"{i}.{k}"] = backend.to_numpy(arr)
        return out

    def load_state_arrays(self, arrays, step_count):
        params = [p for _, p in self._params()]
        self.state = {}
        for key, arr in arrays.items():
            i, name = key.split(".", 1)
            p = params[int(i)]
            if tuple(arr.shape) != tuple(p.shape):
                raise ConfigError(f"optimizer state {key} has shape {arr.shape}, parameter has {p.shape}")
            data = backend.to_device(np.array(arr, dtype=p.dtype), p.device)
            self.state.setdefault(id(p), {})[name] = data
        self.step_count = int(step_count)

    # PyTorch's state_dict: the state by parameter index, and the groups' settings
    def state_dict(self):
        """{"state": {i: {name: array}}, "param_groups": [{setting: value, "params": [i, ...]}],
        "step": steps taken}, parameters numbered in group order as in PyTorch. The arrays are
        copies, so the dict is a snapshot that later steps do not change."""
        state, groups, i = {}, [], 0
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                if id(p) in self.state:
                    state[i] = {k: a.copy() for k, a in self.state[id(p)].items()}
                ids.append(i)
                i += 1
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups, "step": self.step_count}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict`` returned (from an optimizer over parameters of the same
        shapes, in the same groups): the per-parameter state, each group's settings (lr,
        betas, ...) and the step count, so training continues as if never interrupted."""
        try:
            groups, saved = state_dict["param_groups"], state_dict["state"]
        except (KeyError, TypeError):
            raise ConfigError("not an optimizer state_dict (it needs 'state' and 'param_groups')"
                              ) from None
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in groups] != sizes:
            raise ConfigError(f"the optimizer state_dict has groups of "
                              f"{[len(g['params']) for g in groups]} parameters, this optimizer "
                              f"{sizes}")
        params = [p for _, p in self._params()]
        new_state = {}
        for key, arrays in saved.items():
            p = params[int(key)]
            for name, arr in arrays.items():
                if tuple(arr.shape) != tuple(p.shape):
                    raise ConfigError(f"optimizer state {key}.{name} has shape {tuple(arr.shape)}, "
                                      f"the parameter has {tuple(p.shape)}")
                # a copy in the saved dtype (SGD's momentum takes the gradients' dtype)
                data = backend.to_device(np.array(backend.to_numpy(arr)), p.device)
                new_state.setdefault(id(p), {})[name] = data
        for own, g in zip(self.param_groups, groups):
            own.update({k: v for k, v in g.items() if k != "params"})
        self.state = new_state
        self.step_count = int(state_dict.get("step", 0))

    def set_lr(self, lr):
        for g in self.param_groups:
            g["lr"] = lr


class SGD(Optimizer):
    """p -= lr * (g + wd p), with momentum buffer b = momentum b + g when momentum > 0."""

    defaults = {"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0}

    def step(self):
        self.step_count += 1
        for g, p in self._params():
            if p.grad is None or not p.requires_grad:
                continue
            grad = p.grad
            if g["weight_decay"]:
                grad = grad + g["weight_decay"] * p.data
            if g["momentum"]:
                st = self.state.setdefault(id(p), {})
                if "momentum" not in st:
                    st["momentum"] = grad.copy()
                else:
                    st["momentum"] *= g["momentum"]
                    st["momentum"] += grad
                grad = st["momentum"]
            p.data -= (g["lr"] * grad).astype(p.dtype, copy=False)


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019); see kernels/reference.py
    ``adamw_step`` for the update. Defaults as PyTorch (betas 0.9/0.999, eps 1e-8, wd 0.01)."""

    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}

    def step(self):
        self.step_count += 1
        t = self.step_count
        for g, p in self._params():
            if p.grad is None or not p.requires_grad:
                continue
            st = self.state.get(id(p))
            if st is None:
                xp = backend.array_module(p.data)
                st = self.state[id(p)] = {"m": xp.zeros_like(p.data), "v": xp.zeros_like(p.data)}
            b1, b2 = g["betas"]
            grad = p.grad if p.grad.dtype == p.dtype else p.grad.astype(p.dtype)
            registry.get("adamw_step", p.data)(
                p.data, grad, st["m"], st["v"], g["lr"], b1, b2, g["eps"], g["weight_decay"], t
            )


def gpt_param_groups(model, weight_decay):
    """Two groups, as nanoGPT: 2-D+ weights decay; biases, LayerNorm weights and 1-D tensors do
    not. Embedding tables are 2-D; nanoGPT decays them (the token table is also the LM head)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def clip_grad_norm_(params, max_norm):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``; returns
    the norm before clipping (as a float; inf or nan when a gradient holds one).
    ``minillm.nn.utils.clip_grad_norm_`` does the work (PyTorch's spelling, returning a
    Tensor; one transfer from the GPU)."""
    return float(nn_utils.clip_grad_norm_(list(params), max_norm))
