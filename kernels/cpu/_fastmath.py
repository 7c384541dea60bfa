"""Vectorisable exp and tanh for Numba kernels (shared by every kernel in kernels/cpu).

Why: this Numba build has no SVML, so ``math.exp`` / ``math.tanh`` inside ``@njit`` compile to
scalar libm calls and the loop around them does not vectorise (a GELU with ``math.tanh`` ran
about 10x slower than NumPy). Written with +, *, floor and one bit cast only, these loops become
AVX-512 code.

fast_exp(x)   exp by range reduction: x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
              polynomial in Horner form (degree 7 for float32, 12 for float64; truncation
              error 5e-9 and 2e-16 relative), 2**n built directly in the exponent bits.
              float32 in, float32 math out; float64 in, float64 out. x below the smallest
              normal result (-87 float32, -708 float64), -inf included, gives 0; x above 88 /
              709 is clamped there (a large finite number, not inf).
              Measured max relative error vs float64 np.exp over [-100, 88] / [-100, 700]:
              7e-8 float32, 3e-16 float64.
fast_tanh(x)  (1 - e) / (1 + e) with e = fast_exp(-2|x|), sign restored; below |x| < 0.25
              (float32) / 0.0625 (float64) the odd Taylor series instead, because 1 - e cancels
              there. Measured max abs error over [-20, 20]: 9e-8 float32, 2e-16 float64.

fast_max(a, b) max of two floats as one vector-friendly instruction (see its docstring);
              compiled code only.

fast_exp and fast_tanh are overloads: from @njit code they compile per argument type and LLVM
inlines them into the caller's loop; from Python they run the same formulas in NumPy (handy for
tests and notebooks). Compile callers with error_model="numpy": under the default "python"
model every float division gets a zero check, which blocks vectorisation. The overloads use
all fast-math flags but reassociation (which would fold the two-part ln 2 back together) and
no-NaN/no-inf (so -inf still maps to 0).
Importable from any kernel module: ``from ._fastmath import fast_exp, fast_tanh``.
"""

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125  # ln 2 split so that n * LN2_HI is exact for |n| < 2**11
LN2_LO = 1.4286068203094173e-06

# exp(r) = sum r^k / k!, highest power first for Horner.
_EXP_C64 = tuple(1.0 / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(12, -1, -1))
_EXP_C32 = _EXP_C64[-8:]  # degree 7
# tanh(x) = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - 1382x^11/155925 ..., as a
# polynomial in x^2 (highest first), then times x.
_TANH_C = (-1382.0 / 155925.0, 62.0 / 2835.0, -17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0, 1.0)


@intrinsic
def _pow2(typingctx, n):
    """2**n for a float n that holds an integer in the normal exponent range: the biased
    exponent is written straight into the bits (no libm ldexp call, so it vectorises)."""
    if n == types.float32:
        ity, bias, shift = types.int32, 127, 23
    elif n == types.float64:
        ity, bias, shift = types.int64, 1023, 52
    else:
        return None

    def codegen(context, builder, sig, args):
        i = builder.fptosi(args[0], context.get_value_type(ity))
        i = builder.add(i, context.get_constant(ity, bias))
        i = builder.shl(i, context.get_constant(ity, shift))
        return builder.bitcast(i, context.get_value_type(n))

    return n(n), codegen


@intrinsic
def fast_max(typingctx, a, b):
    """max(a, b) for two floats of one type, as LLVM's maxnum. Numba lowers ``max`` and
    ``np.maximum`` to compare-and-branch, which LLVM does not turn into a vector reduction;
    a loop ``m = fast_max(m, x[i])`` becomes vmaxps over 8/16 lanes (7x faster row max).
    NaN is ignored rather than propagated (maxnum semantics); -inf works as usual."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(a)
        fnty = cgutils.ir.FunctionType(fty, [fty, fty])  # llvmlite's ir, as numba re-exports it
        name = "llvm.maxnum.f32" if a == types.float32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        return builder.call(fn, args, fastmath=("fast",))

    return a(a, b), codegen


def _make_exp(ft, coefs, lo, hi):
    """The njit body of fast_exp for float type ``ft`` (np.float32 or np.float64)."""
    c = tuple(ft(v) for v in coefs)
    deg = len(c) - 1
    lo, hi = ft(lo), ft(hi)
    log2e, ln2_hi, ln2_lo, half, zero = ft(LOG2E), ft(LN2_HI), ft(LN2_LO), ft(0.5), ft(0.0)

    def impl(x):
        xc = min(max(x, lo), hi)  # clamp first so -inf / huge never reach the int conversion
        n = np.floor(xc * log2e + half)
        r = (xc - n * ln2_hi) - n * ln2_lo  # |r| <= ln2 / 2
        p = c[0]
        for k in range(1, deg + 1):  # unrolled: c is a tuple of constants
            p = p * r + c[k]
        y = p * _pow2(n)
        return zero if x < lo else y

    return impl


def _make_tanh(ft, cut):
    c = tuple(ft(v) for v in _TANH_C)
    one, two, cut = ft(1.0), ft(2.0), ft(cut)

    def impl(x):
        ax = abs(x)
        e = fast_exp(-two * ax)  # in (0, 1]; -2|x| never overflows
        t = (one - e) / (one + e)
        t = t if x >= 0 else -t
        x2 = x * x
        p = c[0]
        for k in range(1, len(c)):
            p = p * x2 + c[k]
        return x * p if ax < cut else t

    return impl


# Fast-math flags for fast_exp / fast_tanh: see the module docstring.
_FLAGS = {"nsz", "arcp", "contract", "afn"}

# The fast-math flags of every Numba kernel in kernels/cpu: Numba's fastmath=True less
# "contract". With both "reassoc" and "contract", LLVM fuses multiply-adds differently in a
# parallel loop body compiled in the running process than in the copy Numba's on-disk cache
# stores, so the same kernel gave results a few ulps apart compiled or loaded from the cache,
# and a run resumed with a warm cache left the uninterrupted run's numbers
# (tests/train/test_numba_cache.py). Without "contract" the two are bit-identical. (A plain
# set: Numba takes True, a set or a dict.)
FASTMATH = {"nnan", "ninf", "nsz", "arcp", "afn", "reassoc"}

_EXP_ARGS = {
    np.float32: (np.float32, _EXP_C32, -87.0, 88.0),
    np.float64: (np.float64, _EXP_C64, -708.0, 709.0),
}


def fast_exp(x):
    """exp(x) by the same range reduction as the compiled version, in NumPy (see module doc)."""
    x = np.asarray(x)
    ft = np.float32 if x.dtype == np.float32 else np.float64
    _, c, lo, hi = _EXP_ARGS[ft]
    x = x.astype(ft)
    xc = np.clip(x, lo, hi)
    n = np.floor(xc * ft(LOG2E) + ft(0.5))
    r = (xc - n * ft(LN2_HI)) - n * ft(LN2_LO)
    p = np.full_like(r, c[0])
    for ck in c[1:]:
        p = p * r + ft(ck)
    return np.where(x < lo, ft(0), p * np.ldexp(ft(1), n.astype(np.int32)).astype(ft))


def fast_tanh(x):
    """tanh(x) as the compiled version computes it, in NumPy (see module doc)."""
    x = np.asarray(x)
    ft = np.float32 if x.dtype == np.float32 else np.float64
    x = x.astype(ft)
    e = fast_exp(ft(-2) * np.abs(x))
    t = np.copysign((1 - e) / (1 + e), x)
    p = np.full_like(x, _TANH_C[0])
    for ck in _TANH_C[1:]:
        p = p * x * x + ft(ck)
    return np.where(np.abs(x) < (0.25 if ft is np.float32 else 0.0625), x * p, t).astype(ft)


@overload(fast_exp, jit_options={"fastmath": _FLAGS, "error_model": "numpy"})
def _fast_exp_nb(x):
    if x == types.float32:
        return _make_exp(*_EXP_ARGS[np.float32])
    if x == types.float64:
        return _make_exp(*_EXP_ARGS[np.float64])
    if isinstance(x, types.Integer):
        return lambda x: fast_exp(np.float64(x))
    return None


@overload(fast_tanh, jit_options={"fastmath": _FLAGS, "error_model": "numpy"})
def _fast_tanh_nb(x):
    if x == types.float32:
        return _make_tanh(np.float32, 0.25)
    if x == types.float64:
        return _make_tanh(np.float64, 0.0625)
    return None
