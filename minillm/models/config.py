"""What the model configs (GPTConfig, LlamaConfig) share: the round trip through a plain dict
(config.json in a checkpoint) and the check that the size fields are positive integers.

A config class is a dataclass that also derives from ``ModelConfig``; its ``__post_init__``
calls ``self.check_positive_ints(names)`` for its size fields and checks the rest itself.
"""

from dataclasses import asdict, fields

import numpy as np

from minillm.errors import ConfigError


class ModelConfig:
    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The config of a dict of field values; a key that is not a field is an error (a typo
        would otherwise silently fall back to the default)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**d)

    def check_positive_ints(self, names):
        """Raise ConfigError unless each field in ``names`` is an int (or NumPy integer, not a
        bool) of at least 1: layer counts and widths become array shapes and loop bounds."""
        for f in names:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{type(self).__name__}.{f} must be a positive integer, got {v!r}")
