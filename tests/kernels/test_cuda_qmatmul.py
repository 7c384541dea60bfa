"""Every rung of kernels/cuda/qmatmul.py against kernels/reference.py on a GPU: Q8_0, Q4_0 and
Q4_1 weights at odd sizes (O and N not multiples of any tile, K a few blocks), forward and
backward_input, poisoned outputs, the reference in float64 on the host from the same blocks;
weights whose blocks are NumPy (copied to the device once) and CuPy alike.

Marker ``gpu``: skipped without CuPy or a CUDA device (``pytest -m gpu
tests/kernels/test_cuda_qmatmul.py``). Without a GPU, tests/kernels/test_cuda_compile.py
compiles the source and checks the ladder's declarations.
"""

import numpy as np
import pytest

from minillm.kernels import quant, registry
from minillm.kernels import reference as R
from minillm.kernels.cuda import qmatmul as K

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")
from _cuda import gpu, poison, rng_for  # noqa: E402, F401  (fixtures)

FORMATS = ("Q8_0", "Q4_0", "Q4_1")


def _weight(rng, fmt, n_out, Kd, on_device):
    w = (rng.standard_normal((n_out, Kd)) * 0.5).astype(np.float32)
    qw = quant.QuantWeight.from_float(w, fmt)
    if on_device:
        qw = quant.QuantWeight(qw.qtype, qw.shape, cp.asarray(qw.blocks))
    return qw


def _host(qw):
    blocks = qw.blocks if isinstance(qw.blocks, np.ndarray) else qw.blocks.get()
    return quant.QuantWeight(qw.qtype, qw.shape, blocks)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("N,n_out,Kd", [(1, 67, 96), (5, 130, 64), (37, 67, 160), (70, 129, 96)],
                         ids=str)
@pytest.mark.parametrize("on_device", [False, True], ids=["host-blocks", "device-blocks"])
def test_every_rung_matches_the_reference(fmt, N, n_out, Kd, on_device):
    rng = rng_for("qmatmul", fmt, N, n_out, Kd)
    qw = _weight(rng, fmt, n_out, Kd, on_device)
    x = rng.standard_normal((N, Kd)).astype(np.float32)
    dy = rng.standard_normal((N, n_out)).astype(np.float32)
    host = _host(qw)
    y_ref = R.qmatmul_forward(x.astype(np.float64), host)
    dx_ref = R.qmatmul_backward_input(dy.astype(np.float64), host)
    X, DY = cp.asarray(x), cp.asarray(dy)
    for op, arg, want in (("qmatmul_forward", X, y_ref), ("qmatmul_backward_input", DY, dx_ref)):
        for rung in registry.ladder(op, "cuda").rungs:
            if rung.reason_not(arg, qw) is not None:
                assert rung.version == 2 and N < K.MIN_TILED_ROWS
                continue
            got = cp.asnumpy(rung.run(arg, qw)).astype(np.float64)
            assert np.isfinite(got).all(), f"{op} v{rung.version}: unwritten outputs"
            scale = max(1.0, np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{op} v{rung.version} {fmt}")
