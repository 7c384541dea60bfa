"""Tokens/s of a LoRA training step on SmolLM2-135M-Instruct: minillm on a float32 base and on
quantized bases (the weights kept in GGML blocks, QLoRA), beside PyTorch eager on the float32
base (with the PEFT library when installed, else the same LoRA written in plain PyTorch).

One step = forward + backward + gradient clipping + AdamW over the adapters only, on a fixed
random batch of B rows of T tokens whose second half counts in the loss (a prompt, then a
reply, as in chat fine-tuning). LoRA: rank 16, alpha 32, on q, k, v, o, gate, up, down of every
layer (the demo's settings). minillm runs the chunked head + cross-entropy (only the counted
rows reach the 49152-way head) and, with --grad-checkpoint, recomputes each block's
activations in the backward. Tokens/s counts all B*T tokens of the batch.

The frameworks alternate rounds so that machine noise hits both alike; minillm runs in this
process, PyTorch in a worker process of its own (another interpreter with --torch-python; it
reads the float32 weights that this script exports to a temporary Hugging Face directory).
With --rss, each minillm base also runs alone in a fresh child process for its peak RSS.

    python benchmarks/bench_finetune.py                          # float32, q8_0, stored (Q4_1)
    python benchmarks/bench_finetune.py --bases q8_0 --rss --grad-checkpoint
    python benchmarks/bench_finetune.py --torch-python /path/to/venv/bin/python --rounds 3

PyTorch, transformers and PEFT are optional, never minillm dependencies.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if "--torch-worker" not in sys.argv:  # minillm/_env.py's settings apply only before NumPy loads
    import minillm  # noqa: F401

import numpy as np

MODEL = "smollm2-135m-instruct"
RANK, ALPHA = 16, 32.0
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def batch(B, T, vocab, seed=0):
    """(x, y) int64 (B, T): random tokens; y is x shifted, its first half -100 (the prompt)."""
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, vocab, (B, T + 1))
    x, y = seq[:, :-1].copy(), seq[:, 1:].copy()
    y[:, : T // 2] = -100
    return x, y


# ----------------------------------------------------------------------------- minillm
def minillm_step_fn(base_dtype, B, T, grad_checkpoint, seed=0):
    import minillm as M
    from minillm.nn.lora import apply_lora
    from minillm.optim import AdamW
    from minillm.train.step import train_step

    M.manual_seed(seed)
    model, _ = M.load(MODEL, dtype=base_dtype)
    apply_lora(model, RANK, ALPHA, 0.0, "all")
    model.train()
    model.chunked_loss = True
    model.gradient_checkpointing = grad_checkpoint
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.99))
    x, y = batch(B, T, model.config.vocab_size, seed)
    return lambda: train_step(model, opt, [(x, y)], 1.0)[0]


def export_float32(out):
    """The float32 base as a Hugging Face Llama directory (weights + config) for PyTorch."""
    import minillm as M
    from minillm.checkpoints.hf_llama import export_hf_llama

    model, _ = M.load(MODEL, dtype="float32")
    export_hf_llama(model, None, out)
    return model.config.vocab_size


# ----------------------------------------------------------------------------- PyTorch
def torch_step_fn(hf_dir, B, T, vocab, seed=0):
    """PyTorch's LoRA step on the float32 base: PEFT when installed, else a plain LoRA wrapper
    (y = x W^T + (x A^T B^T) * alpha/r, A kaiming-uniform, B zero), the same math."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    try:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                 target_modules=list(TARGETS), bias="none"))
        kind = "pytorch+peft"
    except ImportError:
        model.requires_grad_(False)

        class LoRA(torch.nn.Module):
            def __init__(self, base):
                super().__init__()
                self.base = base
                self.A = torch.nn.Parameter(torch.empty(RANK, base.in_features))
                torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
                self.B = torch.nn.Parameter(torch.zeros(base.out_features, RANK))

            def forward(self, x):
                return self.base(x) + (x @ self.A.T @ self.B.T) * (ALPHA / RANK)

        for name, mod in list(model.named_modules()):
            for child, sub in list(mod.named_children()):
                if child in TARGETS and isinstance(sub, torch.nn.Linear):
                    setattr(mod, child, LoRA(sub))
        kind = "pytorch+lora"
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)
    x, y = (torch.from_numpy(a) for a in batch(B, T, vocab, seed))

    def step():
        logits = model(input_ids=x).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    return step, kind


def torch_worker(hf_dir, B, T, vocab, warmup):
    step, kind = torch_step_fn(hf_dir, B, T, vocab)
    first = step()  # the base's loss (B = 0: the adapters change nothing yet)
    for _ in range(warmup - 1):
        step()
    print(kind, first, flush=True)
    for line in sys.stdin:
        print(time_steps(step, int(line)), flush=True)


class TorchWorker:
    """The PyTorch step in a child process: ``time(n)`` returns its seconds per step."""

    def __init__(self, python, hf_dir, B, T, vocab, warmup):
        from minillm import _env

        env = {k: v for k, v in os.environ.items() if k not in _env.ADDED}
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), "--torch-worker", hf_dir, "--batch-size", str(B),
             "--seq-len", str(T), "--vocab", str(vocab), "--warmup", str(warmup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.kind, first = self._read().split()
        self.first_loss = float(first)

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch worker died (run it alone with --torch-worker to see why)")
        return line

    def time(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# ----------------------------------------------------------------------------- driver
def time_steps(step, n):
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def peak_rss_child(base_dtype, B, T, grad_checkpoint, steps):
    """Peak RSS (MiB) of a fresh process that loads the base and trains ``steps`` LoRA steps."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import bench_finetune as b, resource;"
            f"fn = b.minillm_step_fn({base_dtype!r}, {B}, {T}, {grad_checkpoint});"
            f"[fn() for _ in range({steps})];"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def torch_python(arg):
    """The interpreter for PyTorch's worker, or None when it has no torch + transformers."""
    python = arg or sys.executable
    probe = "import importlib.util as u; print(all(u.find_spec(m) for m in ('torch', 'transformers')))"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return python if out.stdout.strip() == "True" else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bases", default="float32,q8_0,stored",
                    help="minillm base dtypes, comma-separated (stored = the file's Q4_1)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="steps per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--rss", action="store_true", help="peak RSS of each base in a child process")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-python", default=None,
                    help="interpreter with torch + transformers (+ peft) for the comparison")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    B, T = args.batch_size, args.seq_len
    args.warmup = max(1, args.warmup)
    if args.torch_worker:
        return torch_worker(args.torch_worker, B, T, args.vocab, args.warmup)
    bases = [b for b in args.bases.split(",") if b]
    # peak RSS first, while this process is small (a child inherits the parent's high-water mark)
    rss = {b: peak_rss_child(b, B, T, args.grad_checkpoint, 2) for b in bases} if args.rss else {}
    timers, worker, tmp, first = {}, None, None, {}
    for b in bases:
        fn = minillm_step_fn(b, B, T, args.grad_checkpoint)
        first[b] = fn()  # Numba compiles, the allocator warms up: not timed
        for _ in range(args.warmup - 1):
            fn()
        timers[f"minillm {b}"] = lambda n, fn=fn: time_steps(fn, n)
    python = None if args.no_torch else torch_python(args.torch_python)
    if python:
        tmp = tempfile.TemporaryDirectory()
        vocab = export_float32(os.path.join(tmp.name, "hf"))
        worker = TorchWorker(python, os.path.join(tmp.name, "hf"), B, T, vocab, args.warmup)
        timers[f"{worker.kind} float32"] = worker.time
        if "float32" in first:  # validate before timing: the same base loss on the same batch
            mine, theirs = first["float32"], worker.first_loss
            if abs(mine - theirs) > 1e-3 * abs(theirs):
                worker.close()
                raise SystemExit(f"first-step losses differ: minillm {mine:.6f}, PyTorch "
                                 f"{theirs:.6f}; not timing a different computation")
            print(f"first-step loss: minillm {mine:.6f}, PyTorch {theirs:.6f}")
    best = {name: float("inf") for name in timers}
    for _ in range(args.rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer(args.steps))
    if worker is not None:
        worker.close()
        tmp.cleanup()
    print(f"LoRA r={RANK} alpha={ALPHA:g} on {', '.join(TARGETS)}; B={B} T={T}; "
          f"grad checkpoint {'on' if args.grad_checkpoint else 'off'}; best of {args.rounds} "
          f"rounds of {args.steps} steps")
    print(f"{'framework / base':28s} {'ms/step':>9s} {'tok/s':>8s} {'peak RSS MiB':>13s}")
    results = {}
    for name, dt in best.items():
        base = name.split()[-1]
        r = {"ms": dt * 1e3, "tok_per_s": B * T / dt}
        if name.startswith("minillm") and base in rss:
            r["rss_mib"] = rss[base]
        results[name] = r
        shown = f"{r['rss_mib']:.0f}" if "rss_mib" in r else "-"
        print(f"{name:28s} {r['ms']:9.0f} {r['tok_per_s']:8.1f} {shown:>13s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
