"""kernels/cpu/crossentropy.py (every version) against the NumPy reference, with ignored rows
and the all-ignored batch; float64 finite differences of the reference backward."""

import zlib

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import crossentropy as K

DTYPES = [np.float32, np.float64]
SHAPES = [(N, V) for N in (1, 7, 33) for V in (1, 5, 65, 257)]
FWD = sorted(K.VERSIONS["cross_entropy_forward"])
BWD = sorted(K.VERSIONS["cross_entropy_backward"])


def assert_close(got, want):
    rtol = 1e-4 if want.dtype == np.float32 else 1e-10
    atol = rtol * 0.1 * max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def make(shape, dtype, ignore="some", seed=0):
    N, V = shape
    rng = np.random.default_rng(zlib.crc32(repr((shape, ignore, seed)).encode()))
    logits = (4 * rng.standard_normal((N, V))).astype(dtype)
    logits[:, V // 2] += 30  # one dominant logit per row: the max is not the first chunk's
    t = rng.integers(0, V, N)
    if ignore == "some":
        t[::3] = -100
    elif ignore == "all":
        t[:] = -100
    return logits, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("version", FWD)
def test_forward_matches_reference(version, shape, dtype):
    logits, t = make(shape, dtype)
    loss, lse = K.run("cross_entropy_forward", version, logits, t)
    rloss, rlse = R.cross_entropy_forward(logits, t)
    assert loss.shape == () and loss.dtype == dtype
    assert_close(lse, rlse)
    assert_close(loss, rloss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("version", BWD)
def test_backward_matches_reference(version, shape, dtype):
    logits, t = make(shape, dtype)
    _, lse = R.cross_entropy_forward(logits, t)
    dloss = np.asarray(0.7, dtype=dtype)
    got = K.run("cross_entropy_backward", version, dloss, logits, lse, t)
    assert_close(got, R.cross_entropy_backward(dloss, logits, lse, t))
    assert np.all(got[t == -100] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fv,bv", [(f, b) for f in FWD for b in BWD])
def test_all_ignored_gives_zero_loss_and_grads(fv, bv, dtype):
    logits, t = make((7, 65), dtype, ignore="all")
    loss, lse = K.run("cross_entropy_forward", fv, logits, t)
    assert float(loss) == 0.0 and np.isfinite(lse).all()
    d = K.run("cross_entropy_backward", bv, 1.0, logits, lse, t)
    assert np.all(d == 0)


def test_custom_ignore_index_and_bad_target():
    logits, t = make((33, 65), np.float64, ignore="none")
    t[5] = 7
    ref = R.cross_entropy_forward(logits, t, ignore_index=7)
    got = K.cross_entropy_forward(logits, t, ignore_index=7)
    assert_close(got[0], ref[0])
    assert_close(K.cross_entropy_backward(1.0, logits, got[1], t, ignore_index=7),
                 R.cross_entropy_backward(1.0, logits, ref[1], t, ignore_index=7))
    t[3] = 65
    with pytest.raises(IndexError):
        K.cross_entropy_forward(logits, t)


def test_reference_backward_finite_differences():
    logits, t = make((4, 6), np.float64)  # rows 0 and 3 ignored
    dloss = 1.3

    def f(z):
        return dloss * float(R.cross_entropy_forward(z, t)[0])

    g = np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        z = logits.copy()
        z[i] += 1e-6
        fp = f(z)
        z[i] -= 2e-6
        g[i] = (fp - f(z)) / 2e-6
    _, lse = R.cross_entropy_forward(logits, t)
    np.testing.assert_allclose(R.cross_entropy_backward(dloss, logits, lse, t), g,
                               rtol=1e-6, atol=1e-8)
