"""``mpiexec -n 2 python mpi_allreduce_check.py [cpu|cuda]``: minillm.distributed's collectives
on 2 ranks, checked on each rank (exit status 0 when all hold). The buffer sizes are odd on
purpose; ``cuda`` puts the gradients on the GPUs (one per rank), so the sum goes through NCCL."""

import sys

import numpy as np

from minillm import distributed
from minillm.nn import Parameter


def main(device):
    world = distributed.get_world()
    assert (world.size, type(world).__name__) == (2, "MpiWorld"), (world.size, type(world))
    r = world.rank
    if device == "cuda":
        distributed.use_local_gpu(world)
    xp = np
    if device == "cuda":
        import cupy as xp
    # each rank holds rank-dependent gradients; rank 1 has none for the second parameter, and
    # the third has none anywhere (it must stay None, as in one process)
    ps = [Parameter(xp.zeros((3, 5), np.float32)), Parameter(xp.zeros(7, np.float32)),
          Parameter(xp.zeros(2, np.float32))]
    ps[0].grad = xp.full((3, 5), r + 1.0, np.float32)
    ps[1].grad = xp.arange(7, dtype=np.float32) if r == 0 else None
    world.allreduce_grads(ps)
    host = [None if p.grad is None else np.asarray(p.grad.get() if device == "cuda" else p.grad)
            for p in ps]
    assert np.array_equal(host[0], np.full((3, 5), 3.0, np.float32)), host[0]
    assert np.array_equal(host[1], np.arange(7, dtype=np.float32)), host[1]
    assert host[2] is None and host[0].dtype == np.float32
    assert world.sum([r, 0.5]).tolist() == [1.0, 1.0]
    assert world.any(r == 1) and not world.any(False)
    assert world.broadcast({"from": r}) == {"from": 0} and world.allgather(r) == [0, 1]
    world.barrier()
    print(f"rank {r}: collectives ok ({device})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
