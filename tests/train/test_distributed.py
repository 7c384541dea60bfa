"""Data-parallel training under ``mpiexec -n 2`` (minillm.distributed): 2 ranks train the same
run as 1 process with the same config, resume on 2 ranks or on 1 continues it, a failing rank
ends the job with one sentence in bounded time, mismatched ranks are refused at start.

The runs are subprocesses (mpiexec cannot be started inside pytest's process) with one BLAS and
one Numba thread each, so that 1 process and 2 ranks do the same arithmetic. They need mpi4py
and an mpiexec (``pip install -e '.[mpi]'`` brings both: the mpich wheel puts mpiexec beside
the venv's python); without them the MPI tests are skipped with that reason.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minillm as M
from minillm import distributed
from minillm.checkpoints import run as ckpt
from minillm.errors import ConfigError
from minillm.models import GPT, GPTConfig
from minillm.train.pretrain import train_micro_batch
from tests.train.test_pretrain import TINY, make_corpus

DRIVER = Path(__file__).with_name("mpi_driver.py")
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 180  # seconds any one launch may take before the test calls it a hang


def find_mpiexec():
    """The mpiexec of this environment (the mpich wheel's, in the venv's bin), else PATH's."""
    for d in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        if (d / "mpiexec").is_file():
            return str(d / "mpiexec")
    return shutil.which("mpiexec")


def mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if find_mpiexec() is None:
        return "no mpiexec found beside python or on PATH (pip install -e '.[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))


def env(**extra):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MV2_", "MINILLM_TEST_"))}
    e.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
             MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return e


def launch(args, ranks=None, mpmd=None, script=DRIVER, **extra_env):
    """Run ``minillm ARGS`` (or ``script ARGS``) as one plain process (ranks=None) or under
    ``mpiexec -n ranks``; ``mpmd``: a second argument list for rank 1 (``mpiexec -n 1 A : -n 1
    B``). Returns (exit status, stderr, seconds); a launch still running after LIMIT seconds
    fails the test."""
    cmd = [sys.executable, str(script), *args]
    if mpmd is not None:
        cmd = [find_mpiexec(), "-n", "1", *cmd, ":", "-n", "1", sys.executable, str(DRIVER), *mpmd]
    elif ranks is not None:
        cmd = [find_mpiexec(), "-n", str(ranks), *cmd]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env(**extra_env), start_new_session=True)
    try:
        _, err = p.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"{' '.join(cmd)} still ran after {LIMIT} s (a hang)")
    return p.returncode, err, time.time() - t0


def run_args(w, out, *extra):
    return ["pretrain", "--config=shakespeare_char_tiny", f"--corpus={w / 'corpus.txt'}",
            f"--data_dir={w / 'data'}", f"--out_dir={w / out}", "--no-progress", *TINY,
            "--gradient_accumulation_steps=2", "--dropout=0.1", "--eval_interval=4",
            "--lr_decay_iters=8", "--learning_rate=3e-3", *extra]


def ok(result):
    code, err, _ = result
    assert code == 0, err[-3000:]


def log_of(path):
    recs = [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines()]
    train = {r["step"]: r["loss"] for r in recs if "loss" in r}
    evals = {r["step"]: (r["train_loss"], r["val_loss"]) for r in recs if "val_loss" in r}
    return train, evals


def weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "last" / "model.safetensors"))


def max_differences(a, b):
    """(max |loss difference| over logged steps and evaluations, max |weight difference|)."""
    (ta, ea), (tb, eb) = log_of(a), log_of(b)
    assert sorted(ta) == sorted(tb) and sorted(ea) == sorted(eb), (ta, tb)
    dl = max([abs(ta[k] - tb[k]) for k in ta] + [abs(x - y) for k in ea for x, y in zip(ea[k], eb[k])])
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    dw = max(float(np.abs(wa[k].astype(np.float64) - wb[k]).max()) for k in wa)
    return dl, dw


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """8 iterations of the tiny model with gradient_accumulation_steps=2 and dropout: on 2 ranks
    (which prepares the data: rank 0 alone), as 1 process, and on 2 ranks stopped at 4."""
    if mpi_missing():
        pytest.skip(mpi_missing())
    w = tmp_path_factory.mktemp("dist")
    make_corpus(w / "corpus.txt")
    ok(launch(run_args(w, "two", "--max_iters=8"), ranks=2))
    ok(launch(run_args(w, "one", "--max_iters=8")))
    ok(launch(run_args(w, "half", "--max_iters=4"), ranks=2))
    return w


@needs_mpi
def test_two_ranks_train_the_same_run_as_one_process(runs):
    dl, dw = max_differences(runs / "one", runs / "two")
    print(f"2 ranks vs 1 process: max |loss diff| {dl:.3g}, max |weight diff| {dw:.3g}")
    # gradient_accumulation_steps=2 over 2 ranks adds the same two float32 gradients one
    # process adds (the sum of two numbers does not depend on order): equal, not just close
    assert dl <= 1e-6 and dw <= 1e-6, (dl, dw)
    assert len(log_of(runs / "two")[0]) == 8


@needs_mpi
def test_resumed_on_two_ranks_equals_the_uninterrupted_run(runs):
    shutil.copytree(runs / "half", runs / "half2")
    ok(launch(run_args(runs, "half2", "--max_iters=8", "--resume"), ranks=2))
    dl, dw = max_differences(runs / "two", runs / "half2")
    assert dl == 0 and dw == 0, (dl, dw)


@needs_mpi
def test_a_two_rank_run_resumed_on_one_process_goes_on_the_same(runs):
    shutil.copytree(runs / "half", runs / "half1")
    ok(launch(run_args(runs, "half1", "--max_iters=8", "--resume")))
    dl, dw = max_differences(runs / "two", runs / "half1")
    print(f"2 ranks resumed on 1: max |loss diff| {dl:.3g}, max |weight diff| {dw:.3g}")
    assert dl <= 1e-6 and dw <= 1e-6, (dl, dw)


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failing_rank_ends_every_rank_in_bounded_time(runs, how):
    code, err, seconds = launch(run_args(runs, f"fail-{how}", "--max_iters=8"), ranks=2,
                                MINILLM_TEST_FAULT=f"1:3:{how}")
    assert code != 0 and seconds < LIMIT
    if how == "raise":  # the failing rank names itself and the reason, once
        line = ("minillm pretrain: error on rank 1 of 2: the disk of this rank went away "
                "(injected by the test); stopping all ranks")
        assert err.count(line) == 1, err
        assert "Traceback" not in err
    # rank 0 wrote the checkpoint at iteration 0 and nothing after the failure
    assert (runs / f"fail-{how}" / "last" / "model.safetensors").is_file()


@needs_mpi
def test_ctrl_c_under_mpiexec_stops_every_rank_and_saves(runs):
    # mpiexec passes Ctrl-C to every rank; they agree (any rank asked) to stop after one step
    args = [a for a in run_args(runs, "ctrl-c", "--max_iters=100000", "--eval_interval=100000")
            if not a.startswith("--lr_decay_iters")]
    cmd = [find_mpiexec(), "-n", "2", sys.executable, str(DRIVER), *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env(), start_new_session=True)
    log, deadline = runs / "ctrl-c" / "log.jsonl", time.time() + LIMIT
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 4):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("the ranks did not stop after Ctrl-C")
    assert p.returncode == 0, err[-3000:]
    assert out.count("interrupted at iteration") == 1, out
    state = json.loads((runs / "ctrl-c" / "last" / "state.json").read_text())
    assert state["step"] == max(log_of(runs / "ctrl-c")[0])


@needs_mpi
def test_gradient_accumulation_that_does_not_divide_is_one_sentence(runs):
    code, err, _ = launch(run_args(runs, "odd", "--max_iters=2",
                                   "--gradient_accumulation_steps=3"), ranks=2)
    assert code == 2
    assert err.count("gradient_accumulation_steps=3 does not divide among 2 ranks") == 1, err
    assert "Traceback" not in err and not (runs / "odd").exists()


@needs_mpi
def test_a_divergence_every_rank_sees_is_told_once_with_status_3(runs):
    args = [a for a in run_args(runs, "diverge", "--max_iters=20", "--eval_interval=100",
                                "--warmup_iters=0", "--learning_rate=1e30")
            if not a.startswith("--lr_decay_iters")]
    code, err, _ = launch(args, ranks=2)
    assert code == 3 and err.count("training diverged at iteration") == 1, err
    assert "Traceback" not in err and "rank" not in err


@needs_mpi
def test_ranks_with_different_configs_are_refused_at_start(runs):
    args = run_args(runs, "mismatch", "--max_iters=2")
    code, err, _ = launch(args, mpmd=[*args, "--learning_rate=1e-2"])
    assert code == 2
    assert err.count("the configs differ between ranks (rank 1 disagrees with rank 0)") == 1, err
    assert "Traceback" not in err and not (runs / "mismatch" / "last").exists()


@needs_mpi
def test_lora_finetune_on_two_ranks_equals_one_process(runs):
    from safetensors.numpy import load_file

    from tests.train.test_finetune import TOK, sft_records, write_jsonl

    M.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=48, n_layer=1, n_head=2,
                          n_embd=16, dropout=0.1))
    ckpt.save(runs / "base", model, tokenizer=TOK)
    data = write_jsonl(runs / "sft.jsonl", sft_records(24))
    # 18 training examples in steps of 4 x 2: micro-batches 2, 2, 1 (rank 1 idle in the last)
    args = ["finetune", "--base", str(runs / "base"), "--data", str(data), "--task", "sft",
            "--method", "lora", "--rank", "2", "--lora-dropout", "0.1", "--epochs", "2",
            "--batch-size", "4", "--gradient-accumulation-steps", "2", "--val-fraction", "0.25",
            "--lr", "3e-3", "--no-progress"]
    ok(launch([*args, "--out", str(runs / "ft1")]))
    ok(launch([*args, "--out", str(runs / "ft2")], ranks=2))
    logs = [[json.loads(x) for x in (runs / o / "log.jsonl").read_text().splitlines()]
            for o in ("ft1", "ft2")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] and logs[0][-1]["step"] == 6
    keys = {k for r in logs[0] for k in r if "loss" in k}
    dl = max(abs(a[k] - b[k]) for a, b in zip(*logs) for k in keys if k in a)
    files = sorted(p.name for p in (runs / "ft1" / "last").glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (runs / "ft2" / "last").glob("*.safetensors"))
    dw = 0.0
    for name in files:
        a, b = (load_file(str(runs / o / "last" / name)) for o in ("ft1", "ft2"))
        assert sorted(a) == sorted(b)
        dw = max([dw] + [float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a])
    print(f"LoRA fine-tune, 2 ranks vs 1 process: max |loss diff| {dl:.3g}, max |diff| in "
          f"{', '.join(files)} {dw:.3g}")
    assert dl <= 1e-6 and dw <= 1e-6, (dl, dw)


@needs_mpi
def test_collectives_on_two_ranks():
    # gradients summed (a parameter without a gradient on one rank counts as zeros there, one
    # without a gradient anywhere stays None), sums, any, broadcast, allgather, barrier
    ok(launch(["cpu"], ranks=2, script=Path(__file__).with_name("mpi_allreduce_check.py")))


# ----------------------------------------------------------------------------- GPUs (NCCL)
def gpu_count():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver, no device
        return 0


@pytest.mark.gpu
def test_nccl_allreduce_of_one_rank_keeps_the_buffer():
    if gpu_count() < 1 or mpi_missing():
        pytest.skip("needs CuPy with a CUDA device, and mpi4py")
    import cupy as cp
    from mpi4py import MPI

    world = distributed.MpiWorld(MPI.COMM_WORLD)  # a world of 1 that still goes through NCCL
    for dtype in (cp.float32, cp.float64):
        buf = cp.arange(1001, dtype=dtype) / 7
        want = buf.copy()
        assert world.allreduce_(buf) is buf
        cp.testing.assert_array_equal(buf, want)


@pytest.mark.gpu
def test_nccl_collectives_on_two_gpus():
    if gpu_count() < 2 or mpi_missing():
        pytest.skip("needs 2 CUDA devices (NCCL takes one GPU per rank), CuPy and mpi4py")
    ok(launch(["cuda"], ranks=2, script=Path(__file__).with_name("mpi_allreduce_check.py")))


@pytest.mark.gpu
def test_two_gpu_ranks_train_the_same_run_as_one_gpu(tmp_path):
    if gpu_count() < 2 or mpi_missing():
        pytest.skip("needs 2 CUDA devices (NCCL takes one GPU per rank), CuPy and mpi4py")
    make_corpus(tmp_path / "corpus.txt")

    def on_gpu(out):  # the default (CUDA) kernels instead of the NumPy reference ones
        return [a for a in run_args(tmp_path, out, "--max_iters=8", "--device=cuda")
                if a != "--kernels=reference"]

    ok(launch(on_gpu("one")))
    ok(launch(on_gpu("two"), ranks=2))
    dl, dw = max_differences(tmp_path / "one", tmp_path / "two")
    print(f"2 GPU ranks vs 1 GPU: max |loss diff| {dl:.3g}, max |weight diff| {dw:.3g}")
    assert dl <= 1e-5 and dw <= 1e-5, (dl, dw)


# ----------------------------------------------------------------------------- without MPI
def test_world_size_one_imports_no_mpi():
    code = ("import sys; from minillm import distributed as d; import minillm.train.pretrain; "
            "w = d.get_world(); assert (w.rank, w.size) == (0, 1); "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], env=env(), check=True, timeout=LIMIT)


def test_launched_size_reads_the_launchers_variables(monkeypatch):
    for var in (*distributed.SIZE_VARS, "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.launched_size() == 1
    monkeypatch.setenv("PMIX_RANK", "0")
    assert distributed.launched_size() is None  # PMIx names no size: ask MPI
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert distributed.launched_size() == 4
    monkeypatch.setenv("PMI_SIZE", "1")
    assert distributed.launched_size() == 1


def test_world_of_one_process_is_the_identity():
    w = distributed.World()
    buf = np.arange(5, dtype=np.float32)
    assert w.allreduce_(buf) is buf and list(w.my_micro_batches(3)) == [0, 1, 2]
    assert w.sum([1.5, 2.0]).tolist() == [1.5, 2.0] and w.any(True) and not w.any(False)
    assert w.broadcast({"a": 1}) == {"a": 1} and w.allgather(7) == [7]


def test_ranks_split_micro_batches_round_robin():
    class Two(distributed.World):
        size = 2

        def __init__(self, rank):
            self.rank = rank

    assert [list(Two(r).my_micro_batches(6)) for r in (0, 1)] == [[0, 2, 4], [1, 3, 5]]
    assert distributed.micro_batches_per_rank(Two(0), 6) == 3
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=5 does not divide among 2"):
        distributed.micro_batches_per_rank(Two(1), 5)


def test_micro_batch_depends_on_seed_step_and_index_alone(tmp_path):
    from minillm.data import TokenData, prepare

    make_corpus(tmp_path / "c.txt", n_lines=200)
    prepare(tmp_path / "d", corpus=tmp_path / "c.txt", progress=False)
    data = TokenData(tmp_path / "d")
    a = train_micro_batch(data, 7, 3, 1, 4, 8)
    b = train_micro_batch(data, 7, 3, 1, 4, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and a[2] == b[2]
    for other in ((8, 3, 1), (7, 4, 1), (7, 3, 0)):
        c = train_micro_batch(data, *other, 4, 8)
        assert not np.array_equal(a[0], c[0]) and a[2] != c[2]


def test_check_same_names_the_ranks_that_differ():
    class Gathered(distributed.World):
        size = 3

        def allgather(self, obj):
            return [obj, obj, "other"]

    distributed.check_same(distributed.World(), "the configs", "x")  # one rank: nothing to compare
    with pytest.raises(ConfigError, match=r"the configs differ between ranks \(rank 2 disagrees"):
        distributed.check_same(Gathered(), "the configs", "x")


class FakeRanks(distributed.World):
    """Rank ``rank`` of 2, without MPI: records an abort instead of ending the process (so the
    error stops there, where MPI_Abort would end every rank)."""

    size = 2

    def __init__(self, rank):
        self.rank, self.aborted = rank, None

    def abort(self, code):
        self.aborted = code


def test_failing_together_aborts_on_a_local_error_and_tells_a_shared_one_once(capsys):
    from minillm.errors import DataError, DivergenceError

    w = FakeRanks(1)
    with distributed.failing_together(w, "pretrain"):
        raise DataError("no space left on this rank's disk")
    assert w.aborted == 2
    err = capsys.readouterr().err
    assert err == ("minillm pretrain: error on rank 1 of 2: no space left on this rank's disk; "
                   "stopping all ranks\n")
    w = FakeRanks(1)
    with distributed.failing_together(w, "pretrain"):  # a bug: traceback, sentence, abort
        raise RuntimeError("oops")
    err = capsys.readouterr().err
    assert w.aborted == 1 and "Traceback" in err and "rank 1 of 2: RuntimeError: oops;" in err
    # every rank diverges at once: rank 0 raises (the CLI prints it), the others exit quietly
    with pytest.raises(DivergenceError):
        with distributed.failing_together(FakeRanks(0), "pretrain"):
            raise DivergenceError("diverged")
    with pytest.raises(SystemExit) as exit_:
        with distributed.failing_together(FakeRanks(1), "pretrain"):
            raise DivergenceError("diverged")
    assert exit_.value.code == 3 and capsys.readouterr().err == ""


def test_chat_finetuning_refuses_to_run_on_several_ranks(monkeypatch):
    from minillm.train.finetune_chat import finetune_chat

    monkeypatch.setattr(distributed, "_WORLD", FakeRanks(0))
    with pytest.raises(ConfigError, match="chat fine-tuning .* runs in one process"):
        finetune_chat("smollm2-135m-instruct", "train.jsonl")
