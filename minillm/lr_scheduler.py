"""Learning-rate schedulers with PyTorch's names and protocol (``minillm.optim.lr_scheduler``).

    opt = AdamW(model.parameters(), lr=1e-3)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    for it in range(1000):
        loss.backward(); opt.step(); opt.zero_grad()
        sched.step()

A scheduler remembers each group's starting lr as ``base_lrs`` (and in the group as
``initial_lr``) and keeps a step counter ``last_epoch``. Building it sets every group's lr to
the schedule's value at step 0; each ``step()`` advances the counter by one and sets the lr for
the next optimizer step, so the optimizer's i-th step (from 0) runs at ``lr_at(i)``. Each
schedule is written in closed form, a function of the step (PyTorch computes some recursively;
the values are the same up to rounding). ``state_dict()`` / ``load_state_dict()`` save and
restore the counter beside the optimizer's own state.
"""

import math

from minillm.errors import ConfigError


class LRScheduler:
    """The protocol: subclasses define ``lr_at(step, base_lr)``, the lr of one group."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise ConfigError(f"a scheduler needs an optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, step, base_lr):
        raise NotImplementedError

    def get_last_lr(self):
        """The lr of each group as the last ``step()`` set it."""
        return list(self._last_lr)

    def step(self):
        self.last_epoch += 1
        self._last_lr = [self.lr_at(self.last_epoch, b) for b in self.base_lrs]
        for g, lr in zip(self.optimizer.param_groups, self._last_lr):
            g["lr"] = lr

    def state_dict(self):
        """The counter and settings (not the optimizer, which has its own state_dict)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state):
        self.__dict__.update(state)
        for g, lr in zip(self.optimizer.param_groups, self._last_lr):
            g["lr"] = lr


def _positive_int(name, value):
    if int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value}")
    return int(value)


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(step); ``lr_lambda`` may be one function or one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(fns) != n:
            raise ConfigError(f"LambdaLR got {len(fns)} functions for {n} parameter groups")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def step(self):
        self.last_epoch += 1
        self._last_lr = [b * f(self.last_epoch) for b, f in zip(self.base_lrs, self.lr_lambdas)]
        for g, lr in zip(self.optimizer.param_groups, self._last_lr):
            g["lr"] = lr


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (step // step_size): multiplied by ``gamma`` every
    ``step_size`` steps."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = _positive_int("step_size", step_size), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step, base_lr):
        return base_lr * self.gamma ** (step // self.step_size)


class LinearLR(LRScheduler):
    """lr = base_lr * factor, the factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps and staying there (a linear warmup with the
    defaults 1/3 -> 1 over 5 steps, PyTorch's)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ConfigError(f"LinearLR factors must be in (0, 1] and [0, 1], got "
                              f"{start_factor} and {end_factor}")
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = _positive_int("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step, base_lr):
        frac = min(step, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi step / T_max)) / 2 (Loshchilov & Hutter
    2017, without restarts): from base_lr at step 0 down to ``eta_min`` at ``T_max``, and (as
    the cosine goes on, PyTorch's closed form) back up after it."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = _positive_int("T_max", T_max), eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (
            1 + math.cos(math.pi * step / self.T_max)) / 2


class WarmupCosineLR(LRScheduler):
    """nanoGPT's schedule, the one ``minillm pretrain`` runs: linear warmup over
    ``warmup_iters`` steps, cosine decay to ``min_lr`` at ``decay_iters``, then ``min_lr``
    (``minillm.optim.cosine_lr`` computes it; ``min_lr`` is an lr, not a factor)."""

    def __init__(self, optimizer, warmup_iters, decay_iters, min_lr=0.0, last_epoch=-1):
        if warmup_iters < 0 or decay_iters < warmup_iters:
            raise ConfigError(f"WarmupCosineLR needs 0 <= warmup_iters <= decay_iters, got "
                              f"{warmup_iters} and {decay_iters}")
        self.warmup_iters, self.decay_iters, self.min_lr = warmup_iters, decay_iters, min_lr
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step, base_lr):
        return cosine_lr(step, base_lr, self.warmup_iters, self.decay_iters, self.min_lr)


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
