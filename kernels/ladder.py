"""The ladder protocol: how every kernel op, on every device, declares its numbered versions.

An op module (``kernels/cpu/softmax.py``, ``kernels/cuda/layernorm.py``, a folder such as
``kernels/cpu/attention/``) builds one ``Ladder`` per kernel name (the name of its definition in
``kernels/reference.py``, e.g. ``"softmax_forward"``) and lists them in a module-level tuple
``LADDERS``. ``kernels/registry.py`` reads those tuples and is the one place that chooses which
version runs (op x device x mode x inputs); nothing else picks a version.

Every rung is called exactly like the reference function of the same name (same arguments, same
return values), so tests and benchmarks can treat all versions of all ops alike. A rung may say
it cannot take some inputs (``fits`` returns a reason); the registry then tries the versions
listed in ``Ladder.also`` in order, then the reference, and ``describe()`` reports the reason.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Rung:
    """One numbered version of a kernel.

    run:  callable with the reference's signature and return values.
    note: one line saying what this version changes over the one before it, and what it gained.
    fits: optional ``fits(*args) -> None | str``: None when this version takes these inputs,
          else a short reason ("float16 input", "head dim 96 > 64") shown by ``describe()``.
    """

    version: int
    run: Callable
    note: str
    fits: Callable | None = None

    def reason_not(self, *args):
        """None if this rung takes ``args``, else why not."""
        return None if self.fits is None else self.fits(*args)


@dataclass(frozen=True)
class Ladder:
    """The numbered versions of one kernel on one device, and which of them runs by default."""

    op: str  # kernel name, as in kernels/reference.py
    device: str  # "cpu" or "cuda"
    rungs: tuple
    default: int
    about: str = ""  # one line: what the ladder climbs (shown by describe())
    also: tuple = ()  # versions tried, in order, for inputs the default does not fit
    _by_version: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        by = {r.version: r for r in self.rungs}
        if len(by) != len(self.rungs):
            raise ValueError(f"{self.op}/{self.device}: two rungs share a version number")
        for v in (self.default,) + tuple(self.also):
            if v not in by:
                raise ValueError(f"{self.op}/{self.device}: v{v} is not a rung")
        object.__setattr__(self, "_by_version", by)

    @property
    def versions(self):
        return tuple(sorted(self._by_version))

    def rung(self, version):
        try:
            return self._by_version[version]
        except KeyError:
            raise KeyError(f"{self.op} on {self.device} has versions {self.versions}, "
                           f"not {version}") from None


def dtype_fits(names, arg=0):
    """A ``fits`` for rungs that take only some dtypes: None when argument ``arg`` has a dtype
    named in ``names`` (NumPy and CuPy arrays alike), else "<dtype> input"."""
    names = tuple(names)
    dtypes = frozenset(np.dtype(n) for n in names)  # a dtype's .name is built anew per call

    def fits(*args, **kwargs):
        dt = getattr(args[arg], "dtype", None)
        if dt in dtypes:
            return None
        name = getattr(dt, "name", type(args[arg]).__name__)
        return f"{name} input"

    fits.__doc__ = f"{' or '.join(names)} input"
    return fits
