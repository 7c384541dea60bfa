"""``python mpi_driver.py ARGS``: ``minillm ARGS`` for the distributed tests (run under mpiexec),
with an optional fault: MINILLM_TEST_FAULT="RANK:STEP:raise|exit" makes rank RANK raise a
DataError, or end its process at once without a word (as a killed process does), when it starts
optimizer step STEP (counted from 1 in this process)."""

import os
import sys

from minillm import distributed
from minillm.cli import main
from minillm.errors import DataError
from minillm.train import finetune as finetune_module
from minillm.train import pretrain as pretrain_module


def inject(spec):
    rank, step, how = spec.split(":")
    calls = [0]

    def wrap(real):
        def faulty(*args, **kwargs):
            calls[0] += 1
            if distributed.get_world().rank == int(rank) and calls[0] == int(step):
                if how == "raise":
                    raise DataError("the disk of this rank went away (injected by the test)")
                os._exit(9)
            return real(*args, **kwargs)

        return faulty

    pretrain_module.train_step = wrap(pretrain_module.train_step)
    finetune_module.train_step = wrap(finetune_module.train_step)


if __name__ == "__main__":
    if os.environ.get("MINILLM_TEST_FAULT"):
        inject(os.environ["MINILLM_TEST_FAULT"])
    sys.exit(main(sys.argv[1:]))
