"""What pretraining prints about its progress: the bar on a terminal's stderr only, plain lines
(about twenty a run) in a log file, and a notice before the first step compiles the kernels."""

import io
import os
import subprocess
import sys

import pytest

import minillm.train.pretrain as P
from minillm.train.progress import plain_every
from tests.train.test_pretrain import cfg_for


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(cfg, monkeypatch, stderr, progress=True):
    said = []
    monkeypatch.setattr(sys, "stderr", stderr)
    P.pretrain(cfg, progress=progress, say=said.append)
    return said


def test_a_log_file_gets_plain_lines_not_bar_frames(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, "--max_iters=40", "--log_interval=2", "--eval_interval=40")
    err = io.StringIO()  # not a terminal: a redirected log
    said = run(cfg, monkeypatch, err)
    assert err.getvalue() == ""  # no bar frames anywhere
    lines = [s for s in said if s.startswith("step ") and "/40:" in s]
    assert [s.split(":")[0] for s in lines] == [f"step {i}/40" for i in range(2, 41, 2)]
    assert "loss" in lines[0] and "tokens/s" in lines[0]


def test_a_terminal_gets_the_bar_on_stderr_and_no_plain_lines(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, "--max_iters=6", "--eval_interval=6")
    err = Terminal()
    said = run(cfg, monkeypatch, err)
    assert "pretrain" in err.getvalue() and "\r" in err.getvalue()  # tqdm's frames
    assert not [s for s in said if s.startswith("step ") and "/6:" in s]
    assert not any("\r" in s for s in said)


def test_no_progress_is_quiet(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, "--max_iters=6", "--eval_interval=6")
    err = io.StringIO()
    said = run(cfg, monkeypatch, err, progress=False)
    assert err.getvalue() == "" and not [s for s in said if "/6:" in s]


def test_plain_lines_come_about_twenty_a_run():
    from minillm.train.config import TrainConfig

    assert plain_every(TrainConfig(max_iters=2000, log_interval=10)) == 100
    assert plain_every(TrainConfig(max_iters=40, log_interval=1)) == 2
    assert plain_every(TrainConfig(max_iters=5, log_interval=10)) == 10


def test_compile_notice_comes_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "will_compile", lambda cfg: True)
    cfg = cfg_for(tmp_path, "--max_iters=4", "--eval_interval=4", "--log_interval=2")
    said = run(cfg, monkeypatch, io.StringIO())
    notice = next(i for i, s in enumerate(said) if s.startswith("compiling kernels (first run"))
    first_eval = next(i for i, s in enumerate(said) if s.startswith("step 0:"))
    assert notice < first_eval


def test_no_compile_notice_with_reference_kernels(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, "--max_iters=2", "--eval_interval=2")  # kernels=reference
    said = run(cfg, monkeypatch, io.StringIO())
    assert not any(s.startswith("compiling kernels") for s in said)


SCRIPT = """
import numpy as np
from minillm.train.progress import kernels_compiled
before = kernels_compiled()
from minillm.kernels.cpu import layernorm
x = np.ones((3, 5), np.float32); w = np.ones(5, np.float32); b = np.zeros(5, np.float32)
out = np.empty_like(x); mean = np.empty(3, np.float32); rstd = np.empty(3, np.float32)
layernorm.layernorm_forward_v1(out, mean, rstd, x, w, b, 1e-5)
print(before, kernels_compiled())
"""


@pytest.mark.slow
def test_kernels_compiled_tells_a_cold_cache_from_a_warm_one(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    assert [r.stdout.split() for r in runs] == [["False", "True"], ["True", "True"]], runs
