"""Optimizers (SGD with momentum, AdamW), gradient clipping and learning-rate schedules.

Optimizers take parameters or parameter groups (a list of dicts with "params" and per-group
overrides such as "weight_decay"), as in PyTorch, so that biases, LayerNorm weights and
embeddings can be left out of weight decay (``gpt_param_groups``, nanoGPT's rule: decay only
tensors with 2 or more dimensions that are matmul weights).

AdamW's update runs as one kernel per parameter (kernels ``adamw_step``: reference or Numba).
"""

import math

import numpy as np

from minillm import backend
from minillm.errors import ConfigError
from minillm.kernels import registry


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

    The squares are summed in float64. On the GPU the per-gradient sums stay on the device and
    are added there, so the whole norm costs one transfer to the host (the returned float).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    parts = [(g.astype(np.float64) ** 2).sum() if g.dtype != np.float64 else (g * g).sum()
             for g in grads]  # one 0-d float64 array per gradient, on its device
    if backend.is_cupy(grads[0]):
        total = math.sqrt(float(backend.array_module(grads[0]).stack(parts).sum()))  # one sync
    else:
        total = math.sqrt(sum(float(s) for s in parts))
    if max_norm is not None and max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= g.dtype.type(scale)
    return total


# ----------------------------------------------------------------------------- schedules
def cosine_lr(step, lr, warmup_iters, decay_iters, min_lr):
    """Linear warmup from 0 to ``lr`` over ``warmup_iters`` steps, then cosine decay to
    ``min_lr`` at ``decay_iters``, then ``min_lr`` (nanoGPT's get_lr; step counts from 0)."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step > decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)
