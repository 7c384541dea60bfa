"""End-to-end training-step throughput: minillm vs PyTorch eager, same model, same machine.

One training step = forward + backward + gradient clipping + AdamW on a random batch, for the
two Shakespeare configurations (bias-free GPT-2 blocks, vocab 65):

    tiny   4 layers x 4 heads x 128 dims, T 64,  B 12   (shakespeare_char_tiny)
    small  6 layers x 6 heads x 384 dims, T 256, B 8    (shakespeare_char at batch 8)

FLOPs per step = tokens * (6 N + 12 L C T) (PaLM appendix B; N = non-embedding parameters),
reported as GFLOP/s. The two frameworks alternate rounds so that machine noise hits both alike;
the ratio minillm / PyTorch is printed per config. minillm runs in this process, PyTorch in a
worker process of its own that times each round on request: importing minillm changes glibc's
malloc thresholds for its whole process (minillm/_env.py), and PyTorch is measured as its users
run it, without that. With ``--rss`` each framework also runs alone in a child process to
measure its peak resident memory.

    python benchmarks/bench_train.py                 # both configs, PyTorch if installed
    python benchmarks/bench_train.py --config small --rounds 5 --rss

PyTorch is optional (pip install torch==2.13.0); it is never a minillm dependency.
"""

import argparse
import json
import os
import subprocess
import sys
import time

if "--torch-worker" not in sys.argv:  # first: minillm/_env.py's settings (OpenBLAS, threads)
    import minillm  # noqa: F401      # apply only before NumPy loads; PyTorch's worker skips them

import numpy as np

CONFIGS = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8, vocab_size=65),
}


def flops_per_step(c):
    L, C, T, V = c["n_layer"], c["n_embd"], c["block_size"], c["vocab_size"]
    n_nonemb = V * C + L * (12 * C * C + 2 * C) + C  # tied head counted once, no position table
    return c["batch_size"] * T * (6 * n_nonemb + 12 * L * C * T)


# ----------------------------------------------------------------------------- minillm
def minillm_step_fn(c, seed=0):
    import minillm as M
    from minillm.models import GPT, GPTConfig
    from minillm.optim import AdamW, gpt_param_groups
    from minillm.train.step import train_step

    M.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=c["vocab_size"], block_size=c["block_size"], n_layer=c["n_layer"],
                          n_head=c["n_head"], n_embd=c["n_embd"], dropout=0.0, bias=False))
    opt = AdamW(gpt_param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, c["vocab_size"], (c["batch_size"], c["block_size"]))
    y = rng.integers(0, c["vocab_size"], (c["batch_size"], c["block_size"]))

    def step():
        return train_step(model, opt, [(x, y)], grad_clip=1.0)[0]

    return step


# ----------------------------------------------------------------------------- PyTorch
def torch_gpt(c, gpt2_init=False):
    """The same bias-free GPT in PyTorch eager: SDPA attention, tanh GELU, tied head.

    ``gpt2_init`` re-initialises as minillm (and nanoGPT) do: N(0, std) for matrices and
    embeddings, std / sqrt(2 L) for the two residual projections, std = c["initializer_range"]
    (default 0.02, GPT-2's); else PyTorch's defaults."""
    import math

    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF

    C, H = c["n_embd"], c["n_head"]

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = tnn.LayerNorm(C, bias=False), tnn.LayerNorm(C, bias=False)
            self.c_attn, self.c_proj = tnn.Linear(C, 3 * C, bias=False), tnn.Linear(C, C, bias=False)
            self.fc, self.proj = tnn.Linear(C, 4 * C, bias=False), tnn.Linear(4 * C, C, bias=False)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.proj(TF.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte = tnn.Embedding(c["vocab_size"], C)
            self.wpe = tnn.Embedding(c["block_size"], C)
            self.h = tnn.ModuleList(Block() for _ in range(c["n_layer"]))
            self.ln_f = tnn.LayerNorm(C, bias=False)

        def forward(self, idx, tgt):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.h:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return TF.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1))

    model = GPT()
    if gpt2_init:
        std = c.get("initializer_range", 0.02)
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                residual = name.endswith((".c_proj.weight", ".proj.weight"))
                torch.nn.init.normal_(p, 0.0, std / math.sqrt(2 * c["n_layer"]) if residual else std)
    return model


def torch_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99)):
    """AdamW with nanoGPT's groups: decay on 2-D+ tensors only."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def torch_step_fn(c, seed=0):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", os.cpu_count() or 2)))
    model = torch_gpt(c)
    opt = torch_adamw(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, c["vocab_size"], (c["batch_size"], c["block_size"]), generator=g)
    y = torch.randint(0, c["vocab_size"], (c["batch_size"], c["block_size"]), generator=g)

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


# ----------------------------------------------------------------------------- timing
def time_steps(step, n):
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def _threading_layer():
    """The Numba threading layer a parallel kernel starts (minillm/_env.py prefers OpenMP)."""
    try:
        import numba

        from minillm.kernels import registry

        lad = registry.ladder("layernorm_forward")
        x = np.ones((1 << 10, 128), np.float32)  # large enough for the parallel kernel
        lad.rung(lad.default).run(x, np.ones(128, np.float32), np.zeros(128, np.float32), 1e-5)
        return numba.threading_layer()
    except (ImportError, RuntimeError, ValueError):
        return "-"


def _torch_env():
    """This process's environment less the variables minillm/_env.py added at import: PyTorch
    runs as its users run it."""
    from minillm import _env

    return {k: v for k, v in os.environ.items() if k not in _env.ADDED}


class TorchWorker:
    """PyTorch's training step in a child process (no minillm imported there): ``time(n)`` runs
    n steps in the child and returns the seconds per step it measured."""

    def __init__(self, config, warmup):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--torch-worker", config,
                                      "--warmup", str(warmup)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=_torch_env())
        self._read()  # "ready" once the model is built and warmed up

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch worker process died (run it alone with --torch-worker to see why)")
        return line

    def time(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def torch_worker(config, warmup):
    step = torch_step_fn(CONFIGS[config])
    for _ in range(warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        print(time_steps(step, int(line)), flush=True)


def measure(config, frameworks, rounds, steps, warmup=3):
    c = CONFIGS[config]
    timers, worker = {}, None
    for name in frameworks:
        if name == "pytorch":
            worker = TorchWorker(config, warmup)
            timers[name] = worker.time
        else:
            fn = minillm_step_fn(c)
            for _ in range(warmup):  # JIT compile (Numba) and allocator warm-up stay out of the timing
                fn()
            timers[name] = lambda n, fn=fn: time_steps(fn, n)
    best = {name: float("inf") for name in timers}
    for _ in range(rounds):  # alternate, keep each framework's best round
        for name, timer in timers.items():
            best[name] = min(best[name], timer(steps))
    if worker is not None:
        worker.close()
    tokens = c["batch_size"] * c["block_size"]
    return {name: {"ms": dt * 1e3, "tok_per_s": tokens / dt, "gflops": flops_per_step(c) / dt / 1e9}
            for name, dt in best.items()}


def peak_rss_child(config, framework, steps):
    """Peak RSS (MiB) of a fresh process that builds the model and trains ``steps`` steps."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r});"
            f"import bench_train as b, resource; c = b.CONFIGS[{config!r}];"
            f"fn = (b.minillm_step_fn if {framework!r} == 'minillm' else b.torch_step_fn)(c);"
            f"[fn() for _ in range({steps})];"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None  # without importing it (RSS, above)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="steps per round (default: by config)")
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS in child processes")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--torch-worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(args.torch_worker, args.warmup)
    frameworks = ["minillm"] + (["pytorch"] if torch_available() and not args.no_torch else [])
    configs = list(CONFIGS) if args.config == "all" else [args.config]
    # Peak RSS first, while this process is still small: Linux carries a process's RSS high-water
    # mark across fork+exec, so a child started after the timing runs would report ours.
    peak_rss = {(cfg, name): peak_rss_child(cfg, name, steps=3) for cfg in configs for name in frameworks} if args.rss else {}
    import minillm as M
    from minillm.kernels import registry

    print(f"kernels={M.get_kernels()}  OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}  "
          f"numba threads={_threading_layer()}  "
          f"numba={'yes' if registry.numba_available() else 'no'}  frameworks={','.join(frameworks)}  "
          f"malloc={'minillm' if M._env.MALLOC_TUNED else 'default'} (PyTorch: own process, default)")
    results = {}
    print(f"{'config':7s} {'framework':9s} {'ms/step':>9s} {'tok/s':>9s} {'GFLOP/s':>8s} {'peak RSS MiB':>13s}")
    for config in configs:
        steps = args.steps or (20 if config == "tiny" else 3)
        r = measure(config, frameworks, args.rounds, steps)
        for name in frameworks:
            if (config, name) in peak_rss:
                r[name]["rss_mib"] = peak_rss[config, name]
            row = r[name]
            rss = f"{row['rss_mib']:.0f}" if "rss_mib" in row else "-"
            print(f"{config:7s} {name:9s} {row['ms']:9.1f} {row['tok_per_s']:9.0f} {row['gflops']:8.1f} {rss:>13s}")
        if "pytorch" in r:
            ratio = r["minillm"]["tok_per_s"] / r["pytorch"]["tok_per_s"]
            r["ratio"] = ratio
            print(f"{config:7s} minillm / PyTorch = {ratio:.2f}x")
        results[config] = r
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def test_train_step_tiny(benchmark):
    """pytest-benchmark: one minillm training step on the tiny config (loss must be finite)."""
    step = minillm_step_fn(CONFIGS["tiny"])
    for _ in range(3):
        step()
    loss = benchmark(step)
    assert np.isfinite(loss)


if __name__ == "__main__":
    main()
