"""kernels/cpu/_views.py: a strided view's memory as a flat C-contiguous array in Numba code."""

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from minillm.kernels.cpu._views import flat  # noqa: E402


@njit
def _flat_of(a, n):
    return flat(a, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_shares_the_views_memory_and_keeps_it_alive(dtype):
    base = np.arange(2 * 3 * 11 * 5, dtype=dtype).reshape(2, 3, 11, 5)
    view = base[:, :, 2:9]  # a KV cache's positions 2..8: rows contiguous, not the whole array
    s = [st // view.itemsize for st in view.strides]
    span = sum((n - 1) * st for n, st in zip(view.shape[:3], s[:3])) + view.shape[3]
    f = _flat_of(view, span)
    assert f.shape == (span,) and f.flags.c_contiguous and np.shares_memory(f, base)
    for b, h, t in [(0, 0, 0), (1, 2, 6), (1, 0, 3)]:
        o = b * s[0] + h * s[1] + t * s[2]
        np.testing.assert_array_equal(f[o:o + 5], view[b, h, t])
    f[0] = -1  # writes reach the view
    assert view[0, 0, 0, 0] == -1
    del base, view
    assert f[1] == 2 * 5 + 1  # still readable: the flat array holds the memory
