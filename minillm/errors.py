"""The one exception type for user mistakes.

Library code raises ``MinillmError`` (or a subclass) with one clear sentence when the user gave
something wrong: a missing file, a bad option, a shape mismatch, a corrupt checkpoint. The CLI
prints the sentence and exits with status 2 instead of showing a traceback.
"""


class MinillmError(Exception):
    """A user mistake, described in one sentence."""


class ConfigError(MinillmError):
    """An unknown config key, a wrong type, or an impossible value."""


class DataError(MinillmError):
    """A corpus or data file that is missing, empty, unreadable or too small."""


class TokenizerError(MinillmError):
    """Text the tokenizer cannot encode, or a vocabulary the corpus cannot support."""


class CheckpointError(MinillmError):
    """A checkpoint that is missing, truncated, corrupt or from a different model."""


class DivergenceError(MinillmError):
    """Training produced a non-finite loss or gradient norm; the run stops without saving it.
    The command exits with status 3 (not 2: the inputs were valid, the numbers blew up)."""

    exit_code = 3
