"""A recording stand-in for cupy: runs minillm's GPU code paths on the CPU to find the calls that
would fail or stall on a real GPU. It proves nothing about speed or GPU results; it only finds
calls.

``FakeCupy`` is an array module whose arrays (``ndarray``, a class of the module "cupy_fake", so
that ``backend.is_cupy`` and the kernel registry take them for device arrays) wrap NumPy arrays.
Every function called through the module, every NumPy function reached through
``__array_function__`` / ``__array_ufunc__`` and every array method is recorded by name, and
these are violations (``Recorder.violations``):

  lacks      a function CuPy does not provide: anything outside CUPY_FUNCTIONS /
             CUPY_METHODS (an allowlist: a name missing from it is checked in CuPy's docs and
             added, never assumed), and the ufunc methods ``at`` / ``reduceat`` (CuPy's ufunc
             docs: "CuPy does not support at for ufuncs in general; cupyx.scatter_add can
             substitute add.at");
  host copy  an implicit copy to the host: ``np.asarray`` / ``np.array`` of a device array
             (CuPy raises TypeError there), a NumPy array of one or more dimensions mixed into
             a device operation (CuPy refuses those operands too).

Host synchronisations that CuPy allows but that stall the GPU (``.item()``, ``.tolist()``,
``float()``, ``int()``, ``bool()``, ``.get()``) are counted in ``Recorder.syncs`` so a test can
hold a code path to a budget (one loss and one gradient norm per training step, one logits row
per sampled token).

The allowlists come from CuPy's reference ("Comparison Table", docs.cupy.dev/en/latest/
reference/comparison.html, and the ndarray page): every name below has a cupy.* entry there.
"""

import sys
import traceback
from collections import Counter

import numpy as np

CUPY_FUNCTIONS = frozenset("""
abs absolute add all allclose amax amin any arange argmax argmin argpartition argsort argwhere
around array array_equal array_split asarray ascontiguousarray atleast_1d atleast_2d broadcast_arrays
broadcast_to ceil clip concatenate copy copyto cos cosh count_nonzero cumprod cumsum diag diagonal
divide dot einsum empty empty_like equal exp exp2 expand_dims expm1 eye flatnonzero flip floor
floor_divide full full_like greater greater_equal isclose isfinite isinf isnan less less_equal linspace
log log1p log2 log10 logical_and logical_not logical_or matmul max maximum mean min minimum moveaxis
multiply nan_to_num negative nonzero not_equal ones ones_like outer partition power prod
put_along_axis ravel reciprocal repeat reshape result_type rint round searchsorted sign sin sinh
sort split sqrt square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh tile
transpose tril triu true_divide unique var vstack hstack where zeros zeros_like bitwise_and bitwise_or
invert float_power fmax fmin cbrt
""".split())

CUPY_METHODS = frozenset("""
all any argmax argmin argsort astype clip copy cumsum dot fill flatten get item max mean min nonzero
prod ravel repeat reshape sort squeeze std sum swapaxes take tolist transpose var view
""".split())

# dtypes and constants the module passes through from NumPy (cupy re-exports the same objects)
PASSTHROUGH = frozenset("""
float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool_ intp newaxis
inf nan pi e dtype finfo iinfo integer floating generic number
""".split())


class Recorder:
    def __init__(self):
        self.calls = Counter()
        self.violations = []  # (kind, name, where)
        self.syncs = Counter()
        self.sync_sites = Counter()  # "name at file:line" -> count

    def call(self, name):
        self.calls[name] += 1

    def violation(self, kind, name):
        self.violations.append((kind, name, _where()))

    def sync(self, name):
        self.syncs[name] += 1
        self.sync_sites[f"{name} at {_where()}"] += 1

    def reset_syncs(self):
        self.syncs.clear()
        self.sync_sites.clear()

    def report(self):
        return "\n".join(f"{kind}: {name} at {where}" for kind, name, where in self.violations)


def _where():
    """The innermost minillm frame of the current stack: file:line of the offending call."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/minillm/" in frame.filename or "/kernels/" in frame.filename:
            if not frame.filename.endswith("fake_cupy.py"):
                return f"{frame.filename.split('/minillm/')[-1]}:{frame.lineno} ({frame.line})"
    return "?"


REC = Recorder()


def _unwrap(x, operand=False):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (tuple, list)):
        return type(x)(_unwrap(i, operand) for i in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, operand) for k, v in x.items()}
    if operand and isinstance(x, np.ndarray) and x.ndim > 0:
        REC.violation("host copy", f"NumPy array of shape {x.shape} in a device operation")
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):  # CuPy reductions return 0-d device arrays, not scalars
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(i) for i in x)
    if isinstance(x, list):
        return [_wrap(i) for i in x]
    return x


class ndarray:
    """A device array of the fake: a NumPy array that cannot silently become one."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"fake_cupy.ndarray({self._a!r})"

    # ------------------------------------------------------------- the host boundary
    def get(self):
        REC.sync("get")
        return self._a.copy()

    def item(self):
        REC.sync("item")
        return self._a.item()

    def tolist(self):
        REC.sync("tolist")
        return self._a.tolist()

    def __float__(self):
        REC.sync("float")
        return float(self._a)

    def __int__(self):
        REC.sync("int")
        return int(self._a)

    def __index__(self):
        REC.sync("index")
        return self._a.__index__()

    def __bool__(self):
        REC.sync("bool")
        return bool(self._a)

    def __array__(self, dtype=None, copy=None):
        REC.violation("host copy", "np.asarray / np.array of a device array")
        raise TypeError("Implicit conversion to a NumPy array is not allowed (fake cupy)")

    def __iter__(self):
        REC.violation("host copy", "iterating over a device array")
        return iter([ndarray(np.asarray(r)) for r in self._a])

    # ------------------------------------------------------------- NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        REC.call(name)
        if method in ("at", "reduceat"):
            REC.violation("lacks", f"numpy.{name} (use backend.scatter_add)")
        elif ufunc.__name__ not in CUPY_FUNCTIONS:
            REC.violation("lacks", f"numpy.{name}")
        out = getattr(ufunc, method)(*_unwrap(inputs, operand=True), **_unwrap(kwargs))
        return _wrap(out)

    def __array_function__(self, func, types, args, kwargs):
        REC.call(func.__name__)
        if func.__name__ not in CUPY_FUNCTIONS:
            REC.violation("lacks", f"numpy.{func.__name__}")
        return _wrap(func(*_unwrap(args, operand=True), **_unwrap(kwargs)))

    # ------------------------------------------------------------- indexing
    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index)])

    def __setitem__(self, index, value):
        self._a[_unwrap(index)] = _unwrap(value)


def _method(name):
    def method(self, *args, **kwargs):
        REC.call(f"ndarray.{name}")
        if name not in CUPY_METHODS:
            REC.violation("lacks", f"ndarray.{name}")
        return _wrap(getattr(self._a, name)(*_unwrap(args, operand=True), **_unwrap(kwargs)))

    method.__name__ = name
    return method


def _operator(dunder, in_place=False):
    def op(self, *args):
        out = getattr(self._a, dunder)(*_unwrap(args, operand=True))
        if out is NotImplemented:
            return out
        if in_place:  # a += b: the same device array
            return self
        return _wrap(out)

    op.__name__ = dunder
    return op


for _name in CUPY_METHODS - {"get", "item", "tolist"}:
    setattr(ndarray, _name, _method(_name))
for _op in ("add sub mul truediv floordiv mod pow matmul and or xor lt le eq ne gt ge lshift "
            "rshift").split():
    for _d in (f"__{_op}__", f"__r{_op}__", f"__i{_op}__"):
        if hasattr(np.ndarray, _d):
            setattr(ndarray, _d, _operator(_d, in_place=_d == f"__i{_op}__"))
for _d in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _d, _operator(_d))
ndarray.__hash__ = None
ndarray.__module__ = "cupy_fake"  # how backend.is_cupy and the registry spot device arrays


class _RandomState:
    """cupy.random.RandomState's interface (seed, random_sample with a dtype), from NumPy's."""

    def __init__(self, seed=None):
        self._rs = np.random.RandomState(None if seed is None else seed % 2**32)

    def seed(self, seed=None):
        REC.call("random.RandomState.seed")
        self._rs.seed(None if seed is None else seed % 2**32)

    def random_sample(self, size=None, dtype=float):
        REC.call("random.RandomState.random_sample")
        return ndarray(self._rs.random_sample(size).astype(dtype))


class _Random:
    RandomState = _RandomState


class _Cupyx:
    @staticmethod
    def scatter_add(a, index, values):
        REC.call("cupyx.scatter_add")
        np.add.at(a._a, _unwrap(index, operand=True), _unwrap(values, operand=True))


class FakeCupy:
    """The array module: cupy's functions (CUPY_FUNCTIONS) computed by NumPy, and recorded."""

    __name__ = "cupy_fake"
    ndarray = ndarray
    random = _Random()
    cupyx = _Cupyx()

    def __getattr__(self, name):
        if name.startswith("__"):  # the import machinery's questions (__spec__, __path__, ...)
            raise AttributeError(name)
        if name in PASSTHROUGH:
            return getattr(np, name)
        if name not in CUPY_FUNCTIONS:
            REC.violation("lacks", f"cupy.{name}")
            raise AttributeError(f"fake cupy: CuPy has no {name!r} (or it is not in the allowlist)")
        fn = getattr(np, name)

        def call(*args, **kwargs):
            REC.call(name)
            return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))

        return call


def install():
    """Make ``import cupy_fake`` find the fake (kernels/reference.py's ``_xp`` imports the array
    module named by the array's class); returns the module object."""
    fake = FakeCupy()
    sys.modules["cupy_fake"] = fake
    return fake


def uninstall():
    sys.modules.pop("cupy_fake", None)
