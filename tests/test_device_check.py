"""benchmarks/gpu/: the device check's CPU-side logic. Without a GPU it stops at once with one
clear line and exit status 2, before installing or running anything; the benchmark scripts it
calls run at tiny sizes on the CPU (only that they work: no timing is meaningful here)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"


def _has_gpu():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the script would run for real")
def test_device_check_fails_fast_and_clearly_without_a_gpu(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    t = time.monotonic()
    r = subprocess.run(["bash", str(GPU / "device_check.sh")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no usable NVIDIA GPU here" in r.stderr and "nothing was run" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one sentence, no traceback
    assert time.monotonic() - t < 60
    assert not any((tmp_path / "out").iterdir())  # nothing installed, no stage started


@pytest.mark.parametrize("script", ["train_gpt2.py", "decode_llama.py", "bench_kernels.py"])
@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_the_gpu_benchmarks_refuse_to_run_without_a_gpu(script):
    r = subprocess.run([sys.executable, str(GPU / script)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert "NVIDIA GPU" in r.stderr and "nothing measured" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_gpt2_runs_at_a_tiny_size_on_the_cpu():
    r = subprocess.run([sys.executable, str(GPU / "train_gpt2.py"), "--size", "tiny", "--device",
                        "cpu", "--no-torch", "--steps", "1", "--warmup", "0", "--batch", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = [x for x in r.stdout.splitlines() if x.startswith("SUMMARY:")]
    assert len(summary) == 1 and "float32" in summary[0] and "bfloat16" in summary[0]


def test_decode_llama_runs_at_a_tiny_size_on_the_cpu():
    r = subprocess.run([sys.executable, str(GPU / "decode_llama.py"), "--size", "tiny", "--device",
                        "cpu", "--tokens", "3", "--gguf", "/nonexistent.gguf"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no GGUF at /nonexistent.gguf" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("SUMMARY:")
