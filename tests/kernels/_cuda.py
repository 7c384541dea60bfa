"""Fixtures of the GPU kernel tests (test_cuda_kernels.py, test_cuda_llama_ops.py): skip
without a CUDA device, and poison every buffer the launchers allocate (cupy.empty and
cupy.empty_like return NaN-filled float or -7777-filled integer arrays for the length of a
test), so an element a kernel forgets to write fails the comparison instead of passing by luck.
Import only after ``pytest.importorskip("cupy")``."""

import zlib

import cupy as cp
import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def gpu():
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy without a driver or device
        pytest.skip(f"no usable CUDA device: {e}")
    if n < 1:
        pytest.skip("no CUDA device")


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    real_empty, real_empty_like = cp.empty, cp.empty_like

    def fill(a):
        try:
            a.fill(np.nan if a.dtype.kind == "f" or "float" in str(a.dtype) else -7777)
        except Exception:  # a dtype fill() does not take NaN for: leave it
            pass
        return a

    monkeypatch.setattr(cp, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(cp, "empty_like", lambda *a, **k: fill(real_empty_like(*a, **k)))


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))
