"""GPT-2 124M training steps on one GPU: minillm against PyTorch eager, same machine, same run.

    python benchmarks/gpu/train_gpt2.py                       # B 8, T 1024, float32 and bfloat16
    python benchmarks/gpu/train_gpt2.py --dtypes bfloat16 --steps 10
    python benchmarks/gpu/train_gpt2.py --size tiny --device cpu --no-torch   # the logic, on a CPU

One step = forward, backward, gradient clipping at 1.0 and AdamW on random token batches
(vocabulary 50304, as nanoGPT pads it), no dropout, tied LM head. Precision, the same on both
sides: float32 (PyTorch with TF32 off, minillm's FP32 kernels) or bfloat16 mixed precision
(float32 master weights and optimizer state; minillm's ``--dtype bfloat16``, PyTorch's
``torch.autocast(dtype=torch.bfloat16)``). PyTorch runs eager (no torch.compile), with
scaled_dot_product_attention, as nanoGPT does without compile.

Each side warms up (kernel compilation, cuBLAS heuristics, allocator), then the median of
``--steps`` step times (each step ends with a host read of the loss, so the device is idle between
steps) is reported with tokens/s and the ratio minillm / PyTorch in speed (>1: minillm is faster).
The last lines are one table row per (dtype, framework). PyTorch is optional here and never a
minillm dependency.
"""

import argparse
import math
import statistics
import sys
import time

import numpy as np

SIZES = {
    "124m": dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "tiny": dict(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=64),
}


def minillm_step(c, B, dtype, device, seed=0):
    import minillm as M
    from minillm import backend
    from minillm.amp import MixedPrecision
    from minillm.models import GPT, GPTConfig
    from minillm.optim import AdamW, gpt_param_groups
    from minillm.train.step import train_step

    M.manual_seed(seed)
    model = GPT(GPTConfig(dropout=0.0, bias=False, **c))
    if device != "cpu":
        model.to(device)
    opt = AdamW(gpt_param_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95))
    amp = MixedPrecision(dtype) if dtype != "float32" else None
    rng = np.random.default_rng(seed)
    T, V = c["block_size"], c["vocab_size"]
    x, y = (backend.to_device(rng.integers(0, V, (B, T)), device) for _ in range(2))

    def step():
        return train_step(model, opt, [(x, y)], grad_clip=1.0, amp=amp)[0]

    return step


def torch_step(c, B, dtype, device, seed=0):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF

    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    C, H, L, T, V = c["n_embd"], c["n_head"], c["n_layer"], c["block_size"], c["vocab_size"]

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = tnn.LayerNorm(C, bias=False), tnn.LayerNorm(C, bias=False)
            self.c_attn, self.c_proj = tnn.Linear(C, 3 * C, bias=False), tnn.Linear(C, C, bias=False)
            self.fc, self.proj = tnn.Linear(C, 4 * C, bias=False), tnn.Linear(4 * C, C, bias=False)

        def forward(self, x):
            Bx, Tx, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(Bx, Tx, H, C // H).transpose(1, 2) for t in (q, k, v))
            a = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(a.transpose(1, 2).reshape(Bx, Tx, C))
            return x + self.proj(TF.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(V, C), tnn.Embedding(T, C)
            self.h = tnn.ModuleList(Block() for _ in range(L))
            self.ln_f = tnn.LayerNorm(C, bias=False)

        def forward(self, idx, tgt):
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for b in self.h:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return TF.cross_entropy(logits.float().view(-1, V), tgt.view(-1))  # loss in float32

    model = GPT().to(device)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", ".proj.weight")) else 0.02
            torch.nn.init.normal_(p, 0.0, std)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=6e-4, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(seed)
    x, y = (torch.randint(0, V, (B, T), generator=g).to(device) for _ in range(2))
    autocast = torch.autocast(device_type="cuda" if device != "cpu" else "cpu",
                              dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        with autocast:
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def time_steps(step, warmup, steps):
    for _ in range(warmup):
        loss = step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()  # returns a host float: the step has finished on the device
        times.append(time.perf_counter() - t)
    return statistics.median(times), loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="124m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-torch", action="store_true", help="minillm only")
    args = ap.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    bad = [d for d in dtypes if d not in ("float32", "bfloat16")]
    if bad or args.steps < 1 or args.batch < 1:
        sys.exit(f"train_gpt2: dtypes are float32 and bfloat16, steps and batch >= 1 (got "
                 f"{args.dtypes!r}, {args.steps}, {args.batch})")
    if args.device != "cpu":
        try:
            import cupy as cp

            cp.cuda.runtime.getDeviceCount()
        except Exception as e:
            sys.exit(f"train_gpt2: --device {args.device} needs CuPy and an NVIDIA GPU "
                     f"({type(e).__name__}: {e}); nothing measured")
    c = SIZES[args.size]
    tokens = args.batch * c["block_size"]
    rows = []
    for dtype in dtypes:
        sides = [("minillm", minillm_step)] + ([] if args.no_torch else [("pytorch", torch_step)])
        base = None
        for name, make in sides:
            try:
                sec, loss = time_steps(make(c, args.batch, dtype, args.device), args.warmup,
                                       args.steps)
            except Exception as e:  # one failing side is a row, not the end of the run
                print(f"{name} {dtype}: FAILED ({type(e).__name__}: {e})", flush=True)
                rows.append((dtype, name, None, None, None, f"FAILED {type(e).__name__}"))
                continue
            print(f"{name} {dtype}: {sec * 1e3:.1f} ms/step, loss {loss:.3f}", flush=True)
            rows.append([dtype, name, sec, tokens / sec, None, f"loss {loss:.3f}"])
            if name == "pytorch":
                base = sec
        for r in rows:
            if r[0] == dtype and r[2] is not None and base:
                r[4] = base / r[2]
    print(f"\nGPT-2 {args.size}, B {args.batch}, T {c['block_size']}, {args.device}: "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'dtype':9s} {'framework':9s} {'ms/step':>9s} {'tok/s':>10s} {'x pytorch':>9s}  note")
    for dtype, name, sec, tps, ratio, note in rows:
        ms = f"{sec * 1e3:9.1f}" if sec else f"{'-':>9s}"
        tp = f"{tps:10.0f}" if tps else f"{'-':>10s}"
        rt = f"{ratio:9.2f}" if ratio else f"{'-':>9s}"
        print(f"{dtype:9s} {name:9s} {ms} {tp} {rt}  {note}")
    mine = [r for r in rows if r[1] == "minillm"]
    print("SUMMARY: " + ", ".join(
        f"{r[0]} {r[2] * 1e3:.0f} ms/step" + (f" ({r[4]:.2f}x pytorch)" if r[4] else "")
        if r[2] else f"{r[0]} FAILED" for r in mine))
    return 0 if all(r[2] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
