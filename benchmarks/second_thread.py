"""Decode speed when two threads run Numba's parallel kernels: the reason the server runs every
model call on its engine thread, and nothing else in its process calls the model.

    python benchmarks/second_thread.py            # orders mtm and tmt (m: main thread, t: a thread)
    python benchmarks/second_thread.py --orders mtmt

Each letter decodes --tokens greedy tokens of SmolLM2-135M-Instruct (after a short prompt and a
warm-up) on the main thread (m) or on a new thread (t), in that order, in one process, and
prints milliseconds per token. With Numba's OpenMP threading layer each thread that starts
parallel regions gets its own team of worker threads (libgomp). Measured on the 2-core Zen 3
VM: a thread decodes at the main thread's speed while it is the only one that has run kernels;
once the main thread has run them too, the other thread takes about twice as long per token
(mtmt: main 28.9, thread 54.5-58.3 ms/token; tmtm: thread 53.1 after main), while the main
thread stays fast. (More threads than cores: libgomp then stops spinning between parallel
regions, and each of a token's ~150 kernel launches waits for a sleeping worker.)
"""

import argparse
import threading
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", default="mtm,tmt")
    p.add_argument("--tokens", type=int, default=60)
    args = p.parse_args(argv)
    import subprocess
    import sys

    for order in args.orders.split(","):  # each order in a fresh process (fresh thread pools)
        out = subprocess.run([sys.executable, __file__, "--child", order, str(args.tokens)],
                             capture_output=True, text=True, check=True).stdout
        print(f"{order}: {out.strip()}")


def child(order, tokens):
    import minillm
    from minillm.autograd import no_grad

    model, tok = minillm.load("smollm2-135m-instruct")
    ids = tok.encode("The capital of France is a city where")
    out = []

    def decode(where):
        with no_grad():
            cache = model.new_kv_cache(1, max_len=len(ids) + tokens + 5)
            model(np.asarray([ids]), kv_cache=cache, last_only=True)
            for _ in range(20):  # the weights' pages and caches warm
                model(np.asarray([[5]]), kv_cache=cache, last_only=True)
            t0 = time.perf_counter()
            for _ in range(tokens):
                model(np.asarray([[5]]), kv_cache=cache, last_only=True)
        out.append(f"{where} {(time.perf_counter() - t0) / tokens * 1e3:.1f} ms/token")

    for c in order:
        if c == "t":
            th = threading.Thread(target=decode, args=("thread",))
            th.start()
            th.join()
        else:
            decode("main")
    print(", ".join(out))


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
