"""The training step shared by pretraining and fine-tuning, and loss estimation.

One optimizer step = ``len(micro_batches)`` forward/backward passes whose gradients add up
(gradient accumulation: each micro-batch loss is divided by their number, so the step sees the
mean over the large batch), then gradient clipping, then the optimizer update.

Data parallel (``world`` of N ranks, minillm.distributed): each rank passes only its own
micro-batches and ``n_micro``, the number in the whole step; each loss is divided by ``n_micro``
and the gradients are summed across ranks, so every rank ends with the gradient one process
would compute over all ``n_micro`` micro-batches, and applies the same update.

Floating-point overflow inside a step is not warned about: a run that diverges is stopped by the
caller's check of the loss and gradient norm (minillm.train.safety), with one sentence.
"""

import contextlib
import math

import numpy as np

from minillm.autograd import no_grad
from minillm.optim import clip_grad_norm_


def train_step(model, optimizer, micro_batches, grad_clip=1.0, lr=None, loss_fn=None,
               n_micro=None, world=None, amp=None):
    """Run one optimizer step; returns (mean loss over the micro-batches, grad norm).

    ``micro_batches``: an iterable of (x, y) pairs. With ``n_micro`` (the number of
    micro-batches in the step, over all ranks) it is consumed lazily, one pair just before its
    forward pass, so a generator can draw each batch (and seed its dropout) then; without it,
    it is read whole first and its length is the number. ``loss_fn(model, x, y)`` returns a
    scalar loss Tensor; the default is the language-model loss ``model(x, y)[1]``. ``world``:
    the ranks to sum gradients and losses over (None: this process alone). ``amp``: a
    ``minillm.amp.MixedPrecision`` for bfloat16/float16 compute (None: the model's own dtype);
    a float16 step whose gradients overflow is skipped and reports a gradient norm of 0.0
    (``amp.last_step_skipped``).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train_step(model, optimizer, micro_batches, grad_clip, lr, loss_fn, n_micro,
                           world, amp)


def _train_step(model, optimizer, micro_batches, grad_clip, lr, loss_fn, n_micro, world, amp):
    if lr is not None:
        optimizer.set_lr(lr)
    if n_micro is None:
        micro_batches = list(micro_batches)
    n = len(micro_batches) if n_micro is None else n_micro
    optimizer.zero_grad()
    total = 0.0  # the losses added up where they live (float64): one host sync per step
    with _compute_precision(amp, model):
        for x, y in micro_batches:
            loss = loss_fn(model, x, y) if loss_fn is not None else model(x, y)[1]
            total = total + loss.data.astype(np.float64)
            if n > 1:
                loss = loss * (1.0 / n)  # the step's gradient is the mean over micro-batches
            if amp is not None:
                loss = amp.scale_loss(loss)
            loss.backward()
    total = float(total)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if world is not None and world.size > 1:
        # every rank then holds the same summed gradients, so all take the same decisions below
        world.allreduce_grads([p for p in params if p.requires_grad])
        total = float(world.sum([total])[0])  # in float64, as one process adds the losses
    if amp is not None and amp.scaler is not None:
        # mixed precision, float16: unscale, then the norm (computed anyway) tells an overflow
        amp.unscale_(params)
        norm = clip_grad_norm_(params, grad_clip or None)
        amp.last_step_skipped = not amp.scaler.update(math.isfinite(norm))
        if amp.last_step_skipped:
            optimizer.zero_grad()  # skipped: weights and optimizer state stay as they were
            return total / n, 0.0
    else:
        norm = clip_grad_norm_(params, grad_clip) if grad_clip else float("nan")
    optimizer.step()
    optimizer.zero_grad()  # free the gradient arrays between steps
    return total / n, norm


def _compute_precision(amp, model):
    """Mixed precision's low-precision weights for the forward and backward (a no-op without)."""
    if amp is None or not amp.enabled:
        return contextlib.nullcontext()
    return amp.low_precision(model.parameters())


def micro_batch_seeds(seed, step, j):
    """(batch seed, dropout seed) of micro-batch ``j`` of optimizer step ``step``: functions of
    the three numbers alone, so a micro-batch is drawn and masked the same whichever rank
    computes it and however many ranks there are."""
    batch_seed, dropout_seed = np.random.SeedSequence([seed, step, j]).generate_state(2)
    return int(batch_seed), int(dropout_seed)


@no_grad()
def estimate_loss(model, batches, loss_fn=None):
    """Mean loss over ``batches`` [(x, y), ...] in eval mode (dropout off); restores the mode."""
    was_training = model.training
    model.eval()
    losses = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for x, y in batches:
            loss = loss_fn(model, x, y) if loss_fn is not None else model(x, y)[1]
            losses.append(loss.item())
    model.train(was_training)
    return float(np.mean(losses))
