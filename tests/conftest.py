import numpy as np
import pytest

import minillm as M


@pytest.fixture
def reference_kernels():
    """Run a test on the plain NumPy kernels (exact float64 math for gradient checks)."""
    prev = M.get_kernels()
    M.set_kernels("reference")
    yield
    M.set_kernels(prev)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
