"""Generation speed with and without the KV cache (minillm/sample.py), batch 1.

Model: the shakespeare_char configuration (configs/shakespeare_char.toml: block 256, 6 layers,
6 heads, 384 dims, vocab 66, no bias; 10.7 M parameters) with random weights, since speed does
not depend on what the weights are. The tokenizer is the char tokenizer of a 65-character
alphabet with end-of-text disabled, so that every run generates exactly the tokens asked for.

Two measurements, after checking that both paths give the same greedy tokens:
1. tokens/s for 256 new tokens from a 1-token prompt (``generate``, greedy), with and without
   the cache;
2. the cost of one new token at context length L: with the cache, one (1, 1) forward attending
   over L cached positions; without it, a (1, L + 1) forward over the whole context
   (last_only, as the sampler runs it). The cache path is flat in L (its attention row grows,
   but the matmuls over the 384-wide weights dominate); the no-cache path grows about linearly,
   because every weight matmul runs over all L + 1 positions again.

Run: ``python benchmarks/bench_generate.py`` (or ``--repeat 3``), or as a pytest-benchmark suite:
``pytest benchmarks/bench_generate.py --benchmark-enable``.

Measured on the 2-core shared CPU VM (float32, other jobs running, so +-30%):
``MINILLM_KERNELS=reference python benchmarks/bench_generate.py --repeat 3`` (NumPy kernels) and
``MINILLM_KERNELS=auto ... --repeat 2`` (Numba kernels):

    generate 256 tokens, batch 1     reference: s  tokens/s     auto: s  tokens/s
    KV cache                                 2.17     118.2        1.17     219.5
    no cache                                 8.71      29.4       10.10      25.3
    (the cache run is 0.9 s = 285 tokens/s in a quiet moment; the model forward is ~95% of it)

    context L     ms/token reference: cache  no cache     auto: cache  no cache
       16                             2.65     10.73             3.25      8.73
       64                             3.56     20.97             3.38     15.39
      128                             2.69     25.10             5.91     36.57
      192                             2.65     37.23             6.17     56.81
      255                             2.76     51.33             4.79     58.43

The cache path is flat (2.7-6 ms, noise); the no-cache path grows about linearly with L (5x from
16 to 255), and the 256-token generation is 4-9x faster with the cache. A cached decode step at
batch 1 reads all 43 MB of float32 weights to produce one token (2.7 ms is ~16 GB/s), so it is
memory-bound plus Python per-op overhead, and Numba's kernels change little there.
"""

import sys
import time

import numpy as np
import pytest

import minillm  # noqa: F401  (first: minillm/_env.py's settings apply only before NumPy loads)
import minillm as M
from minillm.models import GPT, GPTConfig
from minillm.sample import generate
from minillm.tokenizers import CharTokenizer

CONTEXTS = (16, 64, 128, 192, 255)
N_NEW = 256


class NoEosCharTokenizer(CharTokenizer):
    """A char tokenizer whose end-of-text id is never produced (-1), so random weights do not
    stop a timed run early."""

    def __init__(self, chars):
        super().__init__(chars)
        self.eos_id = -1


def build():
    """(model, tokenizer): shakespeare_char shapes, random weights (seed 0), eval mode."""
    M.manual_seed(0)
    cfg = GPTConfig(vocab_size=66, block_size=256, n_layer=6, n_head=6, n_embd=384, bias=False)
    chars = [chr(c) for c in range(32, 97)]  # 65 characters + the special id = vocab 66
    return GPT(cfg).eval(), NoEosCharTokenizer(chars)


def best_s(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def validate(model, tok):
    """Refuse to time a wrong cache: greedy tokens must match the no-cache path exactly."""
    kw = dict(max_new_tokens=48, greedy=True)
    a = generate(model, tok, "A", use_cache=True, **kw)
    b = generate(model, tok, "A", use_cache=False, **kw)
    assert len(a) == 48 and a == b, "KV-cache generation differs from the no-cache path"


def one_token_step(model, L, use_cache):
    """A function that produces one new token's logits at context length L (L tokens seen)."""
    ids = np.random.default_rng(L).integers(0, 65, (1, L + 1))  # (1, L + 1)
    if not use_cache:
        return lambda: model(ids, last_only=True)  # (1, L + 1) forward over the whole context
    cache = model.new_kv_cache(1)
    with M.no_grad():
        model(ids[:, :L], kv_cache=cache, last_only=True)  # prefill L positions

    def step():
        cache.length = L  # reuse the same slot: every call is "token L + 1"
        return model(ids[:, L:], kv_cache=cache, last_only=True)  # (1, 1) forward

    return step


def per_token_ms(model, L, use_cache, repeat):
    """Milliseconds for one new token at context length L."""
    step = one_token_step(model, L, use_cache)
    with M.no_grad():
        step()  # warm-up (JIT, first-touch allocation)
        return best_s(step, repeat) * 1e3


def run(repeat=3):
    model, tok = build()
    validate(model, tok)
    rows = []
    for use_cache in (True, False):
        run_once = lambda: generate(model, tok, "A", max_new_tokens=N_NEW, greedy=True,  # noqa
                                    use_cache=use_cache)
        assert len(run_once()) == N_NEW  # also the warm-up
        s = best_s(run_once, repeat)
        rows.append(("KV cache" if use_cache else "no cache", s, N_NEW / s))
    curve = {L: (per_token_ms(model, L, True, 10 * repeat),
                 per_token_ms(model, L, False, 2 * repeat))
             for L in CONTEXTS}
    return rows, curve


def print_report(rows, curve, repeat):
    print(f"\nshakespeare_char model (random weights), batch 1, kernels={M.get_kernels()}, "
          f"best of {repeat}")
    print(f"{'generate 256 tokens, batch 1':32s} {'s':>7s} {'tokens/s':>9s}")
    for name, s, tps in rows:
        print(f"{name:32s} {s:7.2f} {tps:9.1f}")
    print(f"\n{'context L':>9s} {'cache ms/token':>15s} {'no-cache ms/token':>18s} {'ratio':>6s}")
    for L, (c, n) in curve.items():
        print(f"{L:9d} {c:15.2f} {n:18.2f} {n / c:5.1f}x")


@pytest.fixture(scope="module")
def built():
    model, tok = build()
    validate(model, tok)
    return model, tok


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_generate_256_tokens(benchmark, built, use_cache):
    model, tok = built
    fn = lambda: generate(model, tok, "A", max_new_tokens=N_NEW, greedy=True,  # noqa: E731
                          use_cache=use_cache)
    assert len(fn()) == N_NEW  # warm-up, and the run is the full length
    benchmark.extra_info.update(tokens=N_NEW, use_cache=use_cache)
    benchmark.pedantic(fn, rounds=2, iterations=1)


@pytest.mark.parametrize("L", CONTEXTS)
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_one_token_at_context(benchmark, built, use_cache, L):
    model, _ = built
    step = one_token_step(model, L, use_cache)
    benchmark.extra_info.update(context=L, use_cache=use_cache)
    with M.no_grad():
        step()  # warm-up
        benchmark(step)


if __name__ == "__main__":
    k = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    print_report(*run(k), k)
