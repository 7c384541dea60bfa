"""Quantized products by rows of x: every rung of ``qmatmul_forward`` that takes row-group
weights, over a model's worth of matrices, for 1 to 512 rows (one decoded token, a server's
batch, a prompt).

    python benchmarks/bench_qmatmul_rows.py                       # SmolLM2-135M's shapes, Q4_1
    python benchmarks/bench_qmatmul_rows.py --qtype q8_0 --rows 1,8 --layers 4
    python benchmarks/bench_qmatmul_rows.py --versions 8,q8:2     # float x against 8-bit x

A version ``q8:V`` is rung V of ``qmatmul_q8_forward`` (x rounded to Q8_0 blocks first).

The matrices have SmolLM2-135M's shapes per layer (q, k, v fused 960 x 576, o 576 x 576, gate
and up fused 3072 x 576, down 576 x 1536), --layers of each, random weights in the row-group
layout, every one in its own memory (so that, as in a model, none is still in the cache when
it comes round again). Each cell is the fastest of --repeat passes over all matrices, in
milliseconds; rungs that decline an input (v7 below 2 rows) still run it, as the ladder test
does, so the table shows why the registry chooses as it does.
"""

import argparse
import time

import numpy as np

from minillm.kernels.cpu import qmatmul as K
from minillm.kernels.cpu import qmatmul_q8 as K8
from minillm.kernels.quant import QuantWeight

SHAPES = ((960, 576), (576, 576), (3072, 576), (576, 1536))


def weights(qtype, layers, rng):
    base = [QuantWeight.from_float(rng.standard_normal(s).astype(np.float32) * 0.05,
                                   qtype).to_groups() for s in SHAPES]
    return [QuantWeight(w.qtype, w.shape, w.blocks.copy(), grouped=True)
            for _ in range(layers) for w in base]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qtype", default="q4_1", choices=("q4_1", "q4_0", "q8_0"))
    p.add_argument("--rows", default="1,2,6,8,16,64,512")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--versions", default="4,6,7")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ws = weights(args.qtype, args.layers, rng)
    versions = args.versions.split(",")
    try:
        runs = [(K8.LADDERS[0] if v.startswith("q8:") else K.LADDERS[0])
                .rung(int(v.removeprefix("q8:"))).run for v in versions]
    except (KeyError, ValueError) as e:
        raise SystemExit(f"bench_qmatmul_rows: --versions {args.versions}: {e}") from None
    print(f"{len(ws)} matrices {args.qtype}, {sum(w.nbytes for w in ws) / 2**20:.1f} MiB; "
          f"milliseconds per pass (fastest of {args.repeat})")
    print(f"{'rows':>5}" + "".join(f"{'v' + v:>9}" for v in versions))
    for n in (int(r) for r in args.rows.split(",")):
        xs = [rng.standard_normal((n, w.shape[1])).astype(np.float32) for w in ws]
        cells = []
        for run in runs:
            run(xs[0], ws[0])  # compile outside the timing
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                for x, w in zip(xs, ws):
                    run(x, w)
                best = min(best, time.perf_counter() - t0)
            cells.append(best * 1e3)
        print(f"{n:>5}" + "".join(f"{c:>9.1f}" for c in cells))


if __name__ == "__main__":
    main()
