"""What keeps a training run honest and its files whole, shared by pretrain and finetune.

    RunLog(path)              log.jsonl, appended one whole line at a time
    check_finite(...)         a non-finite loss or norm stops the run: DivergenceError, exit 3
    check_finite_weights(...) the same for the weights, before every checkpoint write
    progress_bar_on(...)      the progress bar only on a terminal's stderr
    quiet_on_closed_pipe(say) messages that survive a closed standard output
"""

import json
import sys

import numpy as np

from minillm import backend
from minillm.checkpoints.atomic import append_line
from minillm.errors import DivergenceError


def quiet_on_closed_pipe(say):
    """``say`` that ignores a closed standard output (``| head``, or ``| tee`` ended by the same
    Ctrl-C): the run goes on and saves; only its messages are lost."""

    def tell(msg):
        try:
            say(msg)
        except BrokenPipeError:
            pass

    return tell


def progress_bar_on(progress):
    """The progress bar is drawn (on stderr) only when asked for and stderr is a terminal: in a
    pipe or a file it would only add noise, and a closed pipe must not stop the run."""
    try:
        return bool(progress) and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class RunLog:
    """OUT/log.jsonl, appended to one whole line at a time (a crash leaves at most a partial
    last line, which readers skip); ``enabled=False`` (eval_only) writes nothing."""

    def __init__(self, path, enabled=True):
        self.path, self.enabled = path, enabled

    def write(self, rec):
        if self.enabled:
            append_line(self.path, json.dumps(rec))

    def close(self):
        pass


def check_finite(values, step, cfg):
    """Stop the run (DivergenceError, exit status 3) at the first non-finite value in ``values``
    (name -> number: losses, the gradient norm). ``cfg``: what the message names (out_dir,
    learning_rate, grad_clip)."""
    for what, v in values.items():
        if not np.isfinite(v):
            raise DivergenceError(
                f"training diverged at iteration {step}: the {what} is {v}, so the run stopped "
                f"and saved nothing after its last checkpoint in {cfg.out_dir}; try a lower "
                f"learning_rate (now {cfg.learning_rate:g}) or a smaller grad_clip (now "
                f"{cfg.grad_clip:g})"
            )


def check_finite_weights(model, step, cfg):
    """check_finite for every parameter of ``model``: run before each checkpoint write, so a
    diverged model never replaces a good checkpoint."""
    for name, p in model.named_parameters():
        if not np.isfinite(backend.to_numpy(p.data)).all():
            check_finite({f"weight {name}": float("nan")}, step, cfg)
