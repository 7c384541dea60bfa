"""``minillm.nn.functional``, PyTorch's spelling of ``minillm.functional``: the same functions
(``import minillm.nn.functional as F``)."""

from minillm.functional import *  # noqa: F403
from minillm.functional import __all__  # noqa: F401
