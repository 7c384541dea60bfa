"""kernels/cpu/adamw.py: the default rung updates in place and refuses copies. (Every version
against the reference over several steps: tests/kernels/test_ladders.py.)"""

import numpy as np
import pytest

from minillm.kernels.cpu import adamw as K


def test_updates_in_place_and_rejects_copies():
    (lad,) = K.LADDERS
    step = lad.rung(lad.default).run
    p = np.ones((4, 3), np.float32)
    g, m, v = np.full_like(p, 0.5), np.zeros_like(p), np.zeros_like(p)
    step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    np.testing.assert_allclose(p, 0.9, rtol=1e-6)  # first step moves by lr * sign(g)
    assert np.all(m > 0) and np.all(v > 0)
    with pytest.raises(ValueError):
        step(np.ones((4, 6), np.float32)[:, ::2], g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 2)
