"""Loss layers, as ``torch.nn.CrossEntropyLoss`` and ``torch.nn.MSELoss``: a Module holding
the options, calling the function of ``minillm.functional``."""

from minillm import functional as F
from minillm.errors import ConfigError
from minillm.nn.module import Module

_REDUCTIONS = ("mean", "sum", "none")


def _check(reduction):
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


class CrossEntropyLoss(Module):
    """loss(logits (..., V), targets (...) ints): cross-entropy of softmax(logits) against the
    targets, leaving out targets equal to ``ignore_index``; see ``F.cross_entropy``."""

    def __init__(self, ignore_index=-100, reduction="mean"):
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, _check(reduction)

    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets, ignore_index=self.ignore_index,
                               reduction=self.reduction)

    def extra_repr(self):
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class MSELoss(Module):
    """loss(input, target) = (input - target)^2, reduced by ``reduction``."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check(reduction)

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)
