"""The kernel registry: the one place that chooses which version of an op runs, and says why.

Every op module declares its versions in ``LADDERS`` (kernels/ladder.py): one ``Ladder`` per
kernel name of kernels/reference.py, its rungs, its default and when each rung fits. This module
reads those tables and chooses (op x device x mode x inputs -> version):

  device  "cuda" for CuPy arrays (modules of kernels/cuda, imported on the first CuPy array),
          else "cpu" (modules of kernels/cpu, imported only when Numba is installed).
  mode    ``set_mode`` / env ``MINILLM_KERNELS``, CPU only:
            "reference"  plain NumPy (kernels/reference.py): the readable definition, slowest.
            "numba"      the default rung of each CPU ladder; an error if Numba is missing.
            "auto"       "numba" where Numba is installed, else "reference" (the default).
  inputs  the default rung runs when its ``fits`` takes the inputs; else the ladder's ``also``
          versions are tried in order, then the reference (which runs on CuPy too).

An op with no ladder on a device runs the reference there.

Usage: ``get("layernorm_forward", x)(x, w, b, eps)``; the callable is cached per
(op, mode, device). ``describe()`` lists what runs for each op and why (``minillm kernels``).

Adding an op module: write it with a ``LADDERS`` tuple, add its name to ``MODULES`` in
kernels/cpu/__init__.py or kernels/cuda/__init__.py, and its reference to kernels/reference.py.
"""

import importlib
import importlib.util
import os

from . import reference

MODES = ("auto", "reference", "numba")

_mode = None
_tables = {}  # device -> {op: (Ladder, module name)}
_resolved = {}  # (op, mode, device) -> callable
_versions = {}  # (op, device) -> version chosen by set_version instead of the default


# --------------------------------------------------------------------------- modes
def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown kernel mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def get_mode():
    global _mode
    if _mode is None:
        _mode = _check_mode(os.environ.get("MINILLM_KERNELS", "auto").strip().lower() or "auto")
    return _mode


def set_mode(mode):
    """Choose "auto", "reference" or "numba" for every op from now on."""
    global _mode
    _check_mode(mode)
    if mode == "numba" and not numba_available():  # fail now, not at the first op
        raise RuntimeError("kernel mode 'numba' needs the numba package (pip install numba)")
    _mode = mode


def numba_available():
    return importlib.util.find_spec("numba") is not None


def cupy_available():
    return importlib.util.find_spec("cupy") is not None


# --------------------------------------------------------------------------- tables
def ops():
    """Every kernel name: the public functions of kernels/reference.py but its HELPERS."""
    return tuple(name for name, f in vars(reference).items()
                 if callable(f) and not name.startswith("_") and name not in reference.HELPERS
                 and getattr(f, "__module__", None) == reference.__name__)


def _table(device):
    if device not in _tables:
        if device == "cpu" and not numba_available():
            raise RuntimeError("the CPU kernel ladders need the numba package (pip install numba)")
        package = importlib.import_module(f"{__package__}.{device}")  # imports no numba/cupy
        table = {}
        for name in package.MODULES:
            module = importlib.import_module(f"{__package__}.{device}.{name}")
            for lad in module.LADDERS:
                if lad.device != device or lad.op in table:
                    raise ValueError(f"{module.__name__}: ladder {lad.op}/{lad.device} is "
                                     f"declared twice or on the wrong device")
                table[lad.op] = (lad, module.__name__)
        _tables[device] = table
    return _tables[device]


def ladders(device="cpu"):
    """{op: Ladder} of every op that has versions on ``device`` ("cpu" needs Numba)."""
    return {op: lad for op, (lad, _) in _table(device).items()}


def ladder(op, device="cpu"):
    """The Ladder of ``op`` on ``device``, or None when only the reference exists there."""
    entry = _table(device).get(op)
    return entry[0] if entry else None


def set_version(op, version, device="cpu"):
    """Run ``version`` of ``op`` instead of its ladder's default (benchmarks, profiling);
    ``version=None`` goes back to the default."""
    if version is None:
        _versions.pop((op, device), None)
    else:
        lad = ladder(op, device)
        if lad is None:
            raise KeyError(f"{op} has no ladder on {device}")
        lad.rung(version)  # raises for a version that is not a rung
        _versions[(op, device)] = version
    clear_cache()


# --------------------------------------------------------------------------- choosing
def _device(like):
    return "cuda" if like is not None and type(like).__module__.startswith("cupy") else "cpu"


def _choice(op, mode, device):
    """(Ladder or None, module name, why): what runs for ``op`` before looking at inputs."""
    if op not in ops():
        raise KeyError(f"no kernel named {op!r}")
    ref = reference.__name__
    if device == "cpu":
        if mode == "reference":
            return None, ref, "mode reference"
        if not numba_available():
            if mode == "numba":
                raise RuntimeError("kernel mode 'numba' needs the numba package")
            return None, ref, "numba not installed"
    entry = _table(device).get(op)
    if entry is None:
        return None, ref, f"no {device} ladder"
    lad, module = entry
    if (op, device) in _versions:
        return lad, module, "set_version"
    return lad, module, "default"


def get(op, like=None):
    """The callable that runs kernel ``op`` for arrays like ``like`` under the current mode."""
    key = (op, get_mode(), _device(like))
    fn = _resolved.get(key)
    if fn is None:
        fn = _resolved[key] = _resolve(*key)
    return fn


def _resolve(op, mode, device):
    lad, _, _ = _choice(op, mode, device)
    ref = getattr(reference, op)
    if lad is None:
        return ref
    version = _versions.get((op, device), lad.default)
    chain = [lad.rung(version)] + [lad.rung(v) for v in lad.also if v != version]
    if chain[0].fits is None:
        return chain[0].run

    def run(*args, **kwargs):
        for rung in chain:
            if rung.fits is None or rung.fits(*args, **kwargs) is None:
                return rung.run(*args, **kwargs)
        return ref(*args, **kwargs)

    run.__name__ = run.__qualname__ = f"{op}_v{version}"
    run.__wrapped__ = chain[0].run
    return run


def rung_for(op, *args, **kwargs):
    """(version or None for the reference, reason) that ``get(op, args[0])`` runs for these
    inputs (the first array argument decides the device)."""
    like = next((a for a in args if hasattr(a, "dtype")), None)
    device = _device(like)
    lad, _, why = _choice(op, get_mode(), device)
    if lad is None:
        return None, why
    version = _versions.get((op, device), lad.default)
    reasons = []
    for v in (version,) + tuple(x for x in lad.also if x != version):
        r = lad.rung(v).reason_not(*args, **kwargs)
        if r is None:
            return v, why if v == version else f"v{version}: {reasons[0]}"
        reasons.append(r)
    return None, f"v{version}: {reasons[0]}"


def clear_cache():
    _resolved.clear()


# --------------------------------------------------------------------------- describing
def describe(devices=None):
    """Rows (op, device, version, module, why): what runs for each op on this machine under the
    current mode. ``devices`` defaults to "cpu", plus "cuda" where CuPy is installed."""
    devices = devices or (("cpu", "cuda") if cupy_available() else ("cpu",))
    rows = []
    for device in devices:
        for op in ops():
            lad, module, why = _choice(op, get_mode(), device)
            if lad is None:
                rows.append((op, device, "reference", _short(module), why))
                continue
            version = _versions.get((op, device), lad.default)
            rung = lad.rung(version)
            notes = [why, rung.note]
            if getattr(rung.run, "picks_serial", False):  # only CPU rungs, so Numba is there
                from .cpu import _serial

                notes.append(f"one thread below {_serial.PARALLEL_MIN:,} elements")
            if rung.fits is not None:
                also = "".join(f"v{v}, then " for v in lad.also if v != version)
                notes.append(f"takes {rung.fits.__doc__ or 'what its fits accepts'}, "
                             f"else {also}the reference")
            rows.append((op, device, f"v{version}", _short(module), "; ".join(notes)))
    return rows


def _short(module):
    return module.removeprefix("minillm.")


def format_rows(rows):
    """describe()'s rows as an aligned text table."""
    head = ("op", "device", "runs", "module", "why")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(4)]
    lines = []
    for r in [head] + rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return "\n".join(lines)
