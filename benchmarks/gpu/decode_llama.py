"""Decoding speed of a SmolLM2-135M-shaped Llama with Q4_1 weights: tokens per second, batch 1.

    python benchmarks/gpu/decode_llama.py                       # random weights, SmolLM2's shape
    python benchmarks/gpu/decode_llama.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf
    python benchmarks/gpu/decode_llama.py --size tiny --device cpu      # the logic, on a CPU

The GGUF comes from ``--gguf`` or the environment variable MINILLM_DECODE_GGUF; without one (the
file is 94 MiB, more than a device machine's working tree may carry) the model is built with
SmolLM2-135M's configuration (30 layers, C 576, 9 heads / 3 KV heads, F 1536, vocabulary 49152,
tied head) and random weights quantized to Q4_1, every matrix and the tied table, as the
built-in GGUF stores them. Decoding speed does not depend on the weights' values: the same
bytes are read and the same products run; the table says which of the two was measured.

Method: a prompt of ``--prompt`` tokens fills the KV cache, then ``--tokens`` greedy steps each
feed the previous step's argmax (chosen on the device, no sampling on the host); the clock runs
from the first decode step to the device's end of the last (synchronised). The warm-up is one
short run through the same code (kernel compilation, the blocks' copy to the device).
"""

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

SIZES = {
    "smollm2-135m": dict(vocab_size=49152, block_size=2048, n_layer=30, n_head=9, n_kv_head=3,
                         n_embd=576, intermediate_size=1536, rope_theta=100000.0),
    "tiny": dict(vocab_size=96, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                 intermediate_size=96),
}


def random_quantized_llama(cfg, qtype, seed=0):
    """A Llama of config ``cfg`` with random weights, its matrices and tied table in ``qtype``."""
    import minillm as M
    from minillm.kernels.quant import QuantWeight
    from minillm.models.llama import Llama, LlamaConfig
    from minillm.nn.quant import QuantEmbedding, QuantLinear, quantize_linears

    M.manual_seed(seed)
    model = Llama(LlamaConfig(**cfg))
    quantize_linears(model, qtype)
    table = QuantWeight.from_float(model.embed_tokens.weight.data, qtype)
    model.embed_tokens = QuantEmbedding(table)
    model.lm_head = QuantLinear(table)  # the tied head reads the same blocks
    return model


def load_model(args):
    if args.gguf:
        import minillm as M

        model, _ = M.load(args.gguf, device=args.device)
        return model, f"GGUF {os.path.basename(args.gguf)}"
    model = random_quantized_llama(SIZES[args.size], args.qtype)
    if args.device != "cpu":
        model.to(args.device)
    return model, f"{args.size} shape, random {args.qtype.upper()} weights"


def decode(model, prompt_len, n_tokens, device):
    """Seconds for ``n_tokens`` greedy steps after a prompt of ``prompt_len`` tokens."""
    from minillm import backend
    from minillm.autograd import no_grad

    model.eval()
    V = model.config.vocab_size
    cache = model.new_kv_cache(1, max_len=prompt_len + n_tokens + 1)
    ids = backend.to_device(np.random.default_rng(0).integers(0, V, (1, prompt_len)), device)
    sync = (lambda: backend.cupy().cuda.Device().synchronize()) if device != "cpu" else (lambda: None)
    with no_grad():
        logits, _ = model(ids, kv_cache=cache, last_only=True)  # prefill
        nxt = logits.data[:, -1].argmax(axis=-1).reshape(1, 1)  # (1, 1), stays on the device
        sync()
        t = time.perf_counter()
        for _ in range(n_tokens):
            logits, _ = model(nxt, kv_cache=cache, last_only=True)
            nxt = logits.data[:, -1].argmax(axis=-1).reshape(1, 1)
        sync()
        return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=os.environ.get("MINILLM_DECODE_GGUF") or None,
                    help="a Llama GGUF (default: $MINILLM_DECODE_GGUF, else random weights)")
    ap.add_argument("--size", choices=sorted(SIZES), default="smollm2-135m")
    ap.add_argument("--qtype", choices=("q4_1", "q4_0", "q8_0"), default="q4_1")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    if args.gguf and not os.path.isfile(args.gguf):
        print(f"decode_llama: no GGUF at {args.gguf}; using random weights of SmolLM2's shape")
        args.gguf = None
    if args.gguf and importlib.util.find_spec("gguf") is None:
        print("decode_llama: the gguf package is not installed here (carry its wheel); using "
              "random weights of SmolLM2's shape")
        args.gguf = None
    if args.device != "cpu":
        try:
            import cupy as cp

            cp.cuda.runtime.getDeviceCount()
        except Exception as e:
            sys.exit(f"decode_llama: --device {args.device} needs CuPy and an NVIDIA GPU "
                     f"({type(e).__name__}: {e}); nothing measured")
    model, what = load_model(args)
    decode(model, args.prompt, 4, args.device)  # warm-up: compilation, blocks to the device
    sec = decode(model, args.prompt, args.tokens, args.device)
    print(f"\ndecode, batch 1, {args.device}: {what}")
    print(f"{'tokens':>7s} {'seconds':>8s} {'tok/s':>8s} {'ms/token':>9s}")
    print(f"{args.tokens:7d} {sec:8.3f} {args.tokens / sec:8.1f} {sec / args.tokens * 1e3:9.2f}")
    print(f"SUMMARY: {args.tokens / sec:.1f} tok/s ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
