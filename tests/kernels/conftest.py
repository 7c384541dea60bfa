import pytest


@pytest.fixture(autouse=True, params=["parallel", "serial"])
def kernel_threads(request, monkeypatch):
    """Run every kernel test twice: through the parallel kernels and through their serial twins
    (kernels/cpu/_serial.py picks one by input size; the tests' odd sizes are all small)."""
    from minillm.kernels.cpu import _serial

    monkeypatch.setattr(_serial, "PARALLEL_MIN", 0 if request.param == "parallel" else 1 << 62)
    return request.param
