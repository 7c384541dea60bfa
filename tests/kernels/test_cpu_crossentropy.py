"""kernels/cpu/crossentropy.py: ignored rows, the all-ignored batch, a custom ignore_index and
bad targets; float64 finite differences of the reference backward. (Every version against the
reference: tests/kernels/test_ladders.py.)"""

import zlib

import numpy as np
import pytest

from minillm.kernels import reference as R
from minillm.kernels.cpu import crossentropy as K

DTYPES = [np.float32, np.float64]
LADDERS = {lad.op: lad for lad in K.LADDERS}
FWD = LADDERS["cross_entropy_forward"].versions
BWD = LADDERS["cross_entropy_backward"].versions


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
@pytest.mark.parametrize("version", BWD)
def test_backward_zero_on_ignored_rows_and_scalar_loss(version, dtype):
    logits, t = make((33, 65), dtype)
    loss, lse = R.cross_entropy_forward(logits, t)
    got = LADDERS["cross_entropy_backward"].rung(version).run(np.asarray(0.7, dtype), logits, lse, t)
    assert np.all(got[t == -100] == 0)
    for v in FWD:
        loss, _ = LADDERS["cross_entropy_forward"].rung(v).run(logits, t)
        assert loss.shape == () and loss.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fv,bv", [(f, b) for f in FWD for b in BWD])
def test_all_ignored_gives_zero_loss_and_grads(fv, bv, dtype):
    logits, t = make((7, 65), dtype, ignore="all")
    loss, lse = LADDERS["cross_entropy_forward"].rung(fv).run(logits, t)
    assert float(loss) == 0.0 and np.isfinite(lse).all()
    d = LADDERS["cross_entropy_backward"].rung(bv).run(1.0, logits, lse, t)
    assert np.all(d == 0)


def test_custom_ignore_index_and_bad_target():
    fwd, bwd = (LADDERS[op].rung(LADDERS[op].default).run
                for op in ("cross_entropy_forward", "cross_entropy_backward"))
    logits, t = make((33, 65), np.float64, ignore="none")
    t[5] = 7
    ref = R.cross_entropy_forward(logits, t, ignore_index=7)
    got = fwd(logits, t, ignore_index=7)
    assert_close(got[0], ref[0])
    assert_close(bwd(1.0, logits, got[1], t, ignore_index=7),
                 R.cross_entropy_backward(1.0, logits, ref[1], t, ignore_index=7))
    t[3] = 65
    with pytest.raises(IndexError):
        fwd(logits, t)


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
