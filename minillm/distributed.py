"""Data parallelism across processes: world size, rank, gradient all-reduce (MPI; NCCL on GPUs).

    world = get_world()            # World(rank=0, size=1) unless launched by mpiexec / srun
    world.allreduce_grads(params)  # sum every .grad across ranks: one flat buffer, one Allreduce

Each of N processes (ranks) holds the whole model and computes the gradients of its share of the
step's micro-batches; summing them across ranks gives every rank the gradient one process would
compute over all micro-batches, so every rank applies the same update and the weights stay
identical. On the CPU the sum is one MPI Allreduce over one flat buffer of all gradients (float32
for a float32 model): a ring all-reduce sends and receives about 2 x (N-1)/N x params x 4 bytes
per rank per step. On GPUs (CuPy arrays) the same buffer goes through NCCL
(``cupy.cuda.nccl``), whose unique id rank 0 makes and broadcasts over MPI, as llm.c does.

Whether this is an MPI job is read from the environment the launchers set (mpiexec of MPICH and
Intel MPI: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE; MVAPICH: MV2_COMM_WORLD_SIZE; srun with
PMIx: PMIX_RANK) before anything imports mpi4py, so a plain ``minillm pretrain`` never imports
MPI and world size 1 changes nothing.

Failure handling (``failing_together``): a rank that raises prints one sentence naming itself and
calls MPI_Abort, which makes the launcher end every rank at once instead of leaving them waiting
in the next Allreduce; a rank that dies outright is noticed by the launcher, which ends the rest.
An error every rank raises at the same point (a diverged loss, seen by all after the all-reduce;
a mismatch found by ``check_same``) is printed once, by rank 0, and every rank exits cleanly.
"""

import functools
import hashlib
import json
import os
import sys
import traceback
from contextlib import contextmanager

import numpy as np

from minillm.errors import ConfigError, DivergenceError, MinillmError

SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_size():
    """The world size the launcher's environment announces: 1 for a plain process, None when a
    launcher (PMIx) is present but says no size, so MPI itself must be asked."""
    for var in SIZE_VARS:
        value = os.environ.get(var, "")
        if value.strip().isdigit():
            return int(value)
    return None if "PMIX_RANK" in os.environ else 1


class World:
    """One process: rank 0 of 1. Every collective is the identity, nothing is imported."""

    rank, size, local_rank, local_size = 0, 1, 0, 1

    @property
    def is_main(self):
        return self.rank == 0

    def my_micro_batches(self, n):
        """The micro-batch indices of a step of ``n`` that this rank computes: r, r+N, ..."""
        return range(self.rank, n, self.size)

    def allreduce_(self, buf):
        """Sum the flat array ``buf`` (NumPy or CuPy) over all ranks, in place; returns it."""
        return buf

    def allreduce_grads(self, params):
        """Sum ``p.grad`` of every parameter over all ranks (a parameter without a gradient on
        a rank, say one that ran no micro-batch, counts as zeros there)."""

    def sum(self, values):
        """Sum a few float64 numbers over all ranks (losses, flags); returns a NumPy array."""
        return np.asarray(values, dtype=np.float64)

    def any(self, flag):
        """True on every rank when ``flag`` is true on any rank."""
        return bool(flag)

    def broadcast(self, obj):
        """Rank 0's ``obj`` (any JSON-able or picklable value) on every rank."""
        return obj

    def allgather(self, obj):
        return [obj]

    def barrier(self):
        pass

    def abort(self, code):
        sys.exit(code)


class MpiWorld(World):
    """MPI.COMM_WORLD through mpi4py; with CuPy gradients, NCCL (set up on first use)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self._nccl = None
        share_cores(self.local_size)

    def allreduce_(self, buf):
        from minillm.backend import is_cupy

        if is_cupy(buf):
            if self._nccl is None:
                self._nccl = NcclAllreduce(self)
            return self._nccl.allreduce_(buf)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def allreduce_grads(self, params):
        params = list(params)
        if not params:
            return
        # which parameters got a gradient on some rank: the others keep None, as in one process
        # (an optimizer skips them; zeros would still decay them)
        has = self.sum([p.grad is not None for p in params]) > 0
        params = [p for p, h in zip(params, has) if h]
        if not params:
            return
        xp = _xp(params[0].data)
        dtype = np.result_type(*[p.data.dtype for p in params])
        flat = xp.zeros(sum(p.data.size for p in params), dtype=dtype)  # (sum of param sizes,)
        spans, at = [], 0
        for p in params:
            spans.append(slice(at, at + p.data.size))
            if p.grad is not None:
                flat[spans[-1]] = p.grad.reshape(-1)
            at += p.data.size
        self.allreduce_(flat)
        for p, span in zip(params, spans):
            g = flat[span].reshape(p.data.shape)  # a view of the buffer: no second copy
            p.grad = g if g.dtype == p.data.dtype else g.astype(p.data.dtype)

    def sum(self, values):
        buf = np.array(values, dtype=np.float64).reshape(-1)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def any(self, flag):
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def broadcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


class NcclAllreduce:
    """Sum CuPy buffers over all ranks with NCCL: rank 0 makes the communicator's unique id and
    MPI broadcasts it (the pattern llm.c uses). Each rank drives the GPU ``local_rank`` of its
    machine (chosen by ``use_local_gpu`` before the model is built)."""

    def __init__(self, world):
        from minillm.backend import nccl

        self.nccl = nccl = nccl()
        uid = nccl.get_unique_id() if world.rank == 0 else None
        uid = world.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)

    def allreduce_(self, buf):
        from minillm.backend import cupy

        kinds = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32,
                 np.dtype(np.float64): self.nccl.NCCL_FLOAT64,
                 np.dtype(np.float16): self.nccl.NCCL_FLOAT16}
        if buf.dtype not in kinds:
            raise ConfigError(f"NCCL all-reduce of {buf.dtype} gradients is not supported")
        stream = cupy().cuda.get_current_stream()
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kinds[buf.dtype],
                            self.nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
        return buf


def share_cores(local_size):
    """Give each of the ``local_size`` ranks on this machine its share of Numba's threads (the
    kernels' and the matmuls' one pool), so that N ranks do not run N x cores threads; a
    NUMBA_NUM_THREADS the user set wins."""
    if local_size <= 1 or "NUMBA_NUM_THREADS" in os.environ:
        return
    import numba

    numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS // local_size))


def use_local_gpu(world):
    """Make GPU ``local_rank mod (GPUs on this machine)`` CuPy's current device, so that the
    ranks on one machine spread over its GPUs."""
    from minillm.backend import cupy

    cp = cupy()
    cp.cuda.Device(world.local_rank % cp.cuda.runtime.getDeviceCount()).use()


def _xp(a):
    from minillm.backend import array_module

    return array_module(a)


_WORLD = None


def get_world():
    """The World of this process (made once). Imports mpi4py only when a launcher started more
    than one process, or PMIx started this one without saying how many."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = launched_size()
    if size == 1:
        _WORLD = World()
        return _WORLD
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError(
            f"this process was started by an MPI launcher{f' with {size} processes' if size else ''}"
            f" but mpi4py is not installed; install it with pip install 'minillm[mpi]'"
        ) from None
    _WORLD = MpiWorld(MPI.COMM_WORLD) if MPI.COMM_WORLD.Get_size() > 1 else World()
    return _WORLD


def micro_batches_per_rank(world, n, option="gradient_accumulation_steps"):
    """n / world size: how many of a step's ``n`` micro-batches each rank computes; one
    ConfigError (printed once) when they do not divide evenly. Call it after ``check_same``
    made sure that every rank has the same ``n`` (so that every rank raises it)."""
    if n % world.size:
        e = ConfigError(f"{option}={n} does not divide among {world.size} ranks; use a multiple "
                        f"of {world.size} (the global batch stays batch size x {option}) or "
                        f"another number of ranks")
        e.all_ranks = True  # every rank finds it (same n, same world)
        raise e
    return n // world.size


def fingerprint(*parts):
    """A short hash of JSON-able values (a config, file sizes), compared across ranks."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_same(world, what, value):
    """ConfigError on every rank when ``value`` (a fingerprint) differs between ranks; ``what``
    names it in the sentence ("the configs")."""
    values = world.allgather(value)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        e = ConfigError(f"{what} differ between ranks (rank{'s' if len(odd) > 1 else ''} "
                        f"{', '.join(map(str, odd))} disagree{'' if len(odd) > 1 else 's'} with "
                        f"rank 0); launch every rank with the same options and the same files")
        e.all_ranks = True
        raise e


def _exit_code(e):
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, MinillmError):
        return getattr(e, "exit_code", 2)
    if isinstance(e, OSError):
        return 2
    return 1


@contextmanager
def failing_together(world, command):
    """Run a job's body so that an error on one rank ends every rank (see the module docstring).
    At world size 1 it does nothing: errors reach the caller as they are."""
    if world.size == 1:
        yield
        return
    try:
        yield
    except SystemExit:
        raise
    except BaseException as e:
        code = _exit_code(e)
        if isinstance(e, DivergenceError) or getattr(e, "all_ranks", False):
            if world.rank == 0:
                raise  # printed once, by the caller on rank 0; the other ranks exit quietly
            raise SystemExit(code) from None
        if isinstance(e, (MinillmError, OSError, KeyboardInterrupt)):
            msg = str(e) or type(e).__name__
        else:
            traceback.print_exc()
            msg = f"{type(e).__name__}: {e}"
        print(f"minillm {command}: error on rank {world.rank} of {world.size}: {msg}; "
              f"stopping all ranks", file=sys.stderr, flush=True)
        world.abort(code)


def job(command):
    """Decorator: run a training job (``command`` names it in messages) under
    ``failing_together`` with this process's World."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with failing_together(get_world(), command):
                return fn(*args, **kwargs)

        return run

    return wrap
