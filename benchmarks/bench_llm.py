"""Prefill and decode speed of a real LLM (SmolLM2-135M-Instruct by default), minillm against
llama.cpp and transformers + PyTorch in the same run.

    python benchmarks/bench_llm.py                      # every engine that is installed
    python benchmarks/bench_llm.py --engines minillm-stored,minillm-float32 --rounds 3
    /work/benchenv/bin/python benchmarks/bench_llm.py   # a Python that also has the baselines

Each engine runs in its own process (so that its peak RSS is its own), on the same token ids:
a prompt of --prompt-tokens tokens (prefill: one forward over all of them, tokens/s) and then
--new-tokens greedy tokens one at a time with a KV cache (decode, batch 1, tokens/s). Engines:

  minillm-stored    the GGUF's weights as stored (Q4_1 blocks; dequantized inside the products)
  minillm-stored-q8act  the same, each product's input rounded to Q8_0 blocks first
                    (--activations q8_0: llama.cpp's way, AVX-512 VNNI kernels)
  minillm-q8_0      every matrix requantized to Q8_0
  minillm-float32   every matrix dequantized to float32
  llamacpp          llama-cpp-python on the same GGUF file (optional; it builds from source)
  transformers      transformers + PyTorch on the float32 weights it reads from the same GGUF
                    (optional; needs torch, transformers and gguf)

Each row also shows the greedy reply's first words, so a wrong engine shows itself. The thread
count is --threads for every engine (minillm: NUMBA_NUM_THREADS; llama.cpp: n_threads; PyTorch:
torch.set_num_threads). Timings are the best of --rounds rounds, engines alternating.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ENGINES = ("minillm-stored", "minillm-stored-q8act", "minillm-q8_0", "minillm-float32", "llamacpp", "transformers")
TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes "
        "Gutenberg combined movable metal type, oil-based ink and a screw press. Books became "
        "cheaper, ideas travelled faster, and literacy spread across Europe. ")


def prompt_ids(tok, n):
    ids = []
    while len(ids) < n:
        ids += tok.encode(TEXT)
    return ids[:n]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- engines
def run_minillm(dtype, path, ids, new, threads, activations="float32"):
    import numpy as np

    import minillm
    from minillm.autograd import no_grad
    from minillm.nn.quant import set_activations

    model, tok = minillm.load(path, dtype=dtype)
    set_activations(model, activations)

    def once():
        with no_grad():
            cache = model.new_kv_cache(1, max_len=len(ids) + new)
            t0 = time.perf_counter()
            logits, _ = model(np.asarray([ids]), kv_cache=cache, last_only=True)
            t1 = time.perf_counter()
            out = []
            for _ in range(new):
                t = int(np.argmax(np.asarray(logits.data)[0, -1]))
                out.append(t)
                logits, _ = model(np.asarray([[t]]), kv_cache=cache, last_only=True)
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1, out

    once_small = ids[:16]  # compile (first run only) and warm up outside the timing
    with no_grad():
        c = model.new_kv_cache(1, max_len=32)
        model(np.asarray([once_small]), kv_cache=c, last_only=True)
        model(np.asarray([[1]]), kv_cache=c, last_only=True)
    return once, tok.decode


def run_llamacpp(path, ids, new, threads):
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(ids) + new + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=len(ids), verbose=False)

    def once():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        out = []
        V = llm.n_vocab()
        for _ in range(new):  # the last position's logits, as llama.cpp left them
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm._ctx.ctx), shape=(V,))
            t = int(np.argmax(logits))
            out.append(t)
            llm.eval([t])
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, out

    return once, lambda toks: llm.detokenize(toks).decode("utf-8", "replace")


def run_transformers(path, ids, new, threads):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    from minillm.checkpoints.gguf import read_gguf

    tok = read_gguf(path).tokenizer

    def once():
        with torch.inference_mode():
            x = torch.tensor([ids])
            t0 = time.perf_counter()
            o = model(x, use_cache=True)
            t1 = time.perf_counter()
            past, logits, out = o.past_key_values, o.logits, []
            for _ in range(new):
                t = int(logits[0, -1].argmax())
                out.append(t)
                o = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
                past, logits = o.past_key_values, o.logits
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1, out

    return once, tok.decode


def worker(args):
    from pathlib import Path

    path = Path(args.gguf)
    ids = [int(i) for i in args.ids.split(",")]  # tokenized by the driver: no tokenizer of
    # the driver's here, whose freed memory would stay in this process's peak RSS
    if args.worker.startswith("minillm-"):
        dtype = args.worker.split("-")[1]
        activations = "q8_0" if args.worker.endswith("-q8act") else "float32"
        once, decode = run_minillm(dtype, path, ids, args.new_tokens, args.threads, activations)
    elif args.worker == "llamacpp":
        once, decode = run_llamacpp(path, ids, args.new_tokens, args.threads)
    else:
        once, decode = run_transformers(path, ids, args.new_tokens, args.threads)
    prefill, dec, out = once()
    print(json.dumps({"prefill_s": prefill, "decode_s": dec, "rss_mib": peak_rss_mib(),
                      "reply": decode(out)[:60]}), flush=True)


# ----------------------------------------------------------------------------- driver
def available(engine):
    mod = {"llamacpp": "llama_cpp", "transformers": "transformers"}.get(engine)
    if mod is None:
        return True
    code = f"import {mod}" + (", torch, gguf" if engine == "transformers" else "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a built-in model name")
    ap.add_argument("--gguf", default=None, help="a Llama GGUF file instead of --model")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="each round runs every engine once")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ids", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gguf is None:
        from minillm.checkpoints import builtin

        args.gguf = str(builtin.resolve(args.model))
    if args.worker:
        return worker(args)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        sys.exit(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    engines = [e for e in engines if available(e) or print(f"({e}: not installed, skipped)")]
    from minillm.checkpoints.gguf import read_gguf

    ids = prompt_ids(read_gguf(args.gguf).tokenizer, args.prompt_tokens)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    best = {}
    for _ in range(args.rounds):
        for e in engines:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", e, "--gguf", args.gguf,
                   "--prompt-tokens", str(args.prompt_tokens), "--new-tokens",
                   str(args.new_tokens), "--threads", str(args.threads),
                   "--ids", ",".join(map(str, ids))]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode != 0:
                print(f"{e}: failed\n{p.stderr[-2000:]}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            b = best.setdefault(e, r)
            for k in ("prefill_s", "decode_s"):
                b[k] = min(b[k], r[k])
            b["rss_mib"] = max(b["rss_mib"], r["rss_mib"])

    print(f"\n{os.path.basename(args.gguf)}: prefill {args.prompt_tokens} tokens, decode "
          f"{args.new_tokens} tokens (batch 1, greedy), {args.threads} threads, best of "
          f"{args.rounds}")
    print(f"{'engine':21s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'peak RSS MiB':>13s}"
          "  reply")
    for e, r in best.items():
        pre = args.prompt_tokens / r["prefill_s"]
        dec = args.new_tokens / r["decode_s"]
        r["prefill_tps"], r["decode_tps"] = pre, dec
        print(f"{e:21s} {pre:14.1f} {dec:13.1f} {r['rss_mib']:13.0f}  {r['reply']!r}")
    ratios = [("minillm-stored", "llamacpp"), ("minillm-stored-q8act", "llamacpp"),
              ("minillm-float32", "transformers"),
              ("minillm-stored", "transformers"), ("minillm-float32", "llamacpp")]
    for a, b in ratios:
        if a in best and b in best:
            print(f"{a} / {b}: prefill {best[a]['prefill_tps'] / best[b]['prefill_tps']:.2f}x, "
                  f"decode {best[a]['decode_tps'] / best[b]['decode_tps']:.2f}x")


if __name__ == "__main__":
    main()
