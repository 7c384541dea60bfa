"""Elementwise ops with broadcasting: each a forward/backward pair with its derivative.

Binary ops broadcast like NumPy; the backward sums each gradient back to its input's shape
(``unbroadcast``). Math functions read the array module off their input, so the same op runs on
NumPy and CuPy.
"""

from minillm import backend
from minillm.autograd import Function
from minillm.errors import MinillmError
from minillm.kernels import registry
from minillm.ops._util import check_broadcast, lift, unbroadcast
from minillm.tensor import Tensor


def _xp(a):
    return backend.array_module(a)


class Add(Function):
    """y = a + b;  da = dy,  db = dy (each summed back over broadcast axes)."""

    def forward(self, a, b):
        self.saved = (a.shape, a.dtype, b.shape, b.dtype)
        return a + b

    def backward(self, dy):
        sa, ta, sb, tb = self.saved
        return unbroadcast(dy, sa, ta), unbroadcast(dy, sb, tb)


class Sub(Function):
    """y = a - b;  da = dy,  db = -dy."""

    def forward(self, a, b):
        self.saved = (a.shape, a.dtype, b.shape, b.dtype)
        return a - b

    def backward(self, dy):
        sa, ta, sb, tb = self.saved
        return unbroadcast(dy, sa, ta), unbroadcast(-dy, sb, tb)


class Mul(Function):
    """y = a * b;  da = dy * b,  db = dy * a."""

    def forward(self, a, b):
        self.saved = (a, b)
        return a * b

    def backward(self, dy):
        a, b = self.saved
        da = unbroadcast(dy * b, a.shape, a.dtype) if self.needs_input_grad[0] else None
        db = unbroadcast(dy * a, b.shape, b.dtype) if self.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """y = a / b;  da = dy / b,  db = -dy * a / b^2 = -dy * y / b."""

    def forward(self, a, b):
        y = a / b
        self.saved = (a, b, y)
        return y

    def backward(self, dy):
        a, b, y = self.saved
        da = unbroadcast(dy / b, a.shape, a.dtype) if self.needs_input_grad[0] else None
        db = unbroadcast(-dy * y / b, b.shape, b.dtype) if self.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    """y = -x;  dx = -dy."""

    def forward(self, x):
        return -x

    def backward(self, dy):
        return (-dy,)


class PowScalar(Function):
    """y = x^p for a constant p;  dx = dy * p * x^(p-1)."""

    def forward(self, x, p):
        self.saved = (x, p)
        if p == 2:
            return x * x  # x**2 on float32 arrays is much slower than x*x
        if p == 3:
            return x * x * x
        return x**p

    def backward(self, dy):
        x, p = self.saved
        if p == 2:
            return (dy * 2.0 * x,)
        return (dy * p * x ** (p - 1),)


class Pow(Function):
    """y = a^b for tensors;  da = dy * b * a^(b-1),  db = dy * y * ln(a)  (a > 0 for db)."""

    def forward(self, a, b):
        y = a**b
        self.saved = (a, b, y)
        return y

    def backward(self, dy):
        a, b, y = self.saved
        da = unbroadcast(dy * b * a ** (b - 1), a.shape, a.dtype) if self.needs_input_grad[0] else None
        db = None
        if self.needs_input_grad[1]:
            db = unbroadcast(dy * y * _xp(a).log(a), b.shape, b.dtype)
        return da, db


class Exp(Function):
    """y = e^x;  dx = dy * y."""

    def forward(self, x):
        y = _xp(x).exp(x)
        self.saved = (y,)
        return y

    def backward(self, dy):
        return (dy * self.saved[0],)


class Log(Function):
    """y = ln x;  dx = dy / x."""

    def forward(self, x):
        self.saved = (x,)
        return _xp(x).log(x)

    def backward(self, dy):
        return (dy / self.saved[0],)


class Sqrt(Function):
    """y = sqrt(x);  dx = dy / (2 y)."""

    def forward(self, x):
        y = _xp(x).sqrt(x)
        self.saved = (y,)
        return y

    def backward(self, dy):
        return (dy / (2.0 * self.saved[0]),)


class Tanh(Function):
    """y = tanh(x);  dx = dy * (1 - y^2). Keeps y, not x."""

    def forward(self, x):
        y = _xp(x).tanh(x)
        self.saved = (y,)
        return y

    def backward(self, dy):
        y = self.saved[0]
        return (dy * (1.0 - y * y),)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dx = dy * y * (1 - y)."""

    def forward(self, x):
        xp = _xp(x)
        # 0.5 * (1 + tanh(x/2)) equals the logistic function and never overflows
        y = 0.5 * (1.0 + xp.tanh(0.5 * x))
        self.saved = (y,)
        return y

    def backward(self, dy):
        y = self.saved[0]
        return (dy * y * (1.0 - y),)


class ReLU(Function):
    """y = max(x, 0);  dx = dy where x > 0, else 0."""

    def forward(self, x):
        self.saved = (x > 0,)
        return x * self.saved[0]

    def backward(self, dy):
        return (dy * self.saved[0],)


class Abs(Function):
    """y = |x|;  dx = dy * sign(x)."""

    def forward(self, x):
        self.saved = (x,)
        return _xp(x).abs(x)

    def backward(self, dy):
        return (dy * _xp(dy).sign(self.saved[0]),)


class GELU(Function):
    """GPT-2's GELU, tanh approximation: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    The forward and backward are kernels (kernels/reference.py gelu_forward/gelu_backward).
    """

    def forward(self, x):
        self.saved = (x,)
        return registry.get("gelu_forward", x)(x)

    def backward(self, dy):
        x = self.saved[0]
        return (registry.get("gelu_backward", x)(dy, x),)


class Clamp(Function):
    """y = min(max(x, lo), hi) (either bound may be None);
    dx = dy where lo <= x <= hi (PyTorch's rule at the bounds), else 0."""

    def forward(self, x, lo, hi):
        xp = _xp(x)
        inside = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        self.saved = (inside,)
        return xp.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, dy):
        return (dy * self.saved[0],)


class Clone(Function):
    """y = a copy of x (its own memory, still in the graph);  dx = dy."""

    def forward(self, x):
        return x.copy()

    def backward(self, dy):
        return (dy,)


class Where(Function):
    """y = where(cond, a, b);  da = dy where cond, db = dy where not cond. cond is constant."""

    def forward(self, cond, a, b):
        self.saved = (cond, a.shape, a.dtype, b.shape, b.dtype)
        return _xp(a).where(cond, a, b)

    def backward(self, dy):
        cond, sa, ta, sb, tb = self.saved
        zero = dy.dtype.type(0)
        da = unbroadcast(_xp(dy).where(cond, dy, zero), sa, ta) if self.needs_input_grad[1] else None
        db = unbroadcast(_xp(dy).where(cond, zero, dy), sb, tb) if self.needs_input_grad[2] else None
        return None, da, db


class Cast(Function):
    """y = x converted to another float dtype;  dx = dy converted back."""

    def forward(self, x, dtype):
        self.saved = (x.dtype,)
        return x.astype(dtype)

    def backward(self, dy):
        return (dy.astype(self.saved[0]),)


# ---------------------------------------------------------------------------- functions
def _binary(cls, a, b, name):
    if not isinstance(a, Tensor):
        a = lift(a, b)
    elif not isinstance(b, Tensor):
        b = lift(b, a)
    try:
        return cls.apply(a, b)
    except ValueError:
        check_broadcast(a, b, name)
        raise


def add(a, b):
    return _binary(Add, a, b, "add")


def sub(a, b):
    return _binary(Sub, a, b, "sub")


def mul(a, b):
    return _binary(Mul, a, b, "mul")


def div(a, b):
    return _binary(Div, a, b, "div")


def neg(x):
    return Neg.apply(x)


def pow(a, b):
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        return PowScalar.apply(a, p=float(b) if not isinstance(b, int) else b)
    return _binary(Pow, a, b, "pow")


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    return ReLU.apply(x)


def abs(x):
    return Abs.apply(x)


def gelu(x):
    return GELU.apply(x)


def square(x):
    """x^2: PowScalar with p = 2 (which computes x * x)."""
    return PowScalar.apply(x, p=2)


def clamp(x, min=None, max=None):
    """x limited to [min, max] elementwise (PyTorch's ``clamp``; ``clip`` is NumPy's name)."""
    if min is None and max is None:
        raise MinillmError("clamp needs min, max or both")
    if min is not None and max is not None and min > max:
        raise MinillmError(f"clamp: min {min} is larger than max {max}")
    return Clamp.apply(x, lo=min, hi=max)


clip = clamp


def clone(x):
    return Clone.apply(x)


def where(cond, a, b):
    """Elementwise choice: a where cond is true, else b (cond: bool array or Tensor)."""
    like = a if isinstance(a, Tensor) else b
    a, b = lift(a, like), lift(b, like)
    c = cond.data if isinstance(cond, Tensor) else cond
    if backend.is_cupy(like.data) and not backend.is_cupy(c):
        c = backend.to_device(c, "cuda")
    return Where.apply(Tensor(c), a, b)


def masked_fill(x, mask, value):
    """x with ``value`` where mask is true (mask broadcasts against x); no gradient there."""
    return where(mask, lift(value, x), x)


def cast(x, dtype):
    return Cast.apply(x, dtype=dtype)
