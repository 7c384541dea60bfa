"""Activation layers: a Module around each elementwise function, as ``torch.nn.ReLU`` etc., so
they can sit in a ``Sequential``."""

from minillm import functional as F
from minillm.errors import ConfigError
from minillm.nn.module import Module


class ReLU(Module):
    """y = max(x, 0)."""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """GELU in GPT-2's tanh approximation (``approximate="tanh"``, the only form minillm has)."""

    def __init__(self, approximate="tanh"):
        super().__init__()
        if approximate != "tanh":
            raise ConfigError(f"GELU: only approximate='tanh' (GPT-2's form) is implemented, "
                              f"got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """y = x * sigmoid(x) (also called swish)."""

    def forward(self, x):
        return F.silu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Softmax(Module):
    """Softmax along ``dim`` (the last axis by default)."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, dim=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Identity(Module):
    def forward(self, x):
        return x
