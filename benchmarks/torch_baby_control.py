"""Control run: nanoGPT's CPU "baby" Shakespeare setting trained in PyTorch eager on minillm's
prepared data, with minillm's batch sampler, schedule and fixed evaluation batches, so that the
final losses can be compared with ``minillm pretrain --config shakespeare_char_tiny``.

    minillm prepare --out data/shakespeare_char            # or run the demo once
    python benchmarks/torch_baby_control.py --data data/shakespeare_char [--seed 1337]

Measured on this project's 2-core machine (seed 1337): val loss 2.0600 at 1000 iterations and
1.8997 at 2000 (1.9077 over 200 eval batches); minillm, same settings: 2.0611 and 1.9042 (1.9088).

Final val loss over seeds (20 eval batches / 200), PyTorch, same data and schedule:
  this recipe (tanh GELU, vocab 66, no biases)   seeds 1337, 1, 2, 3: 1.8997/1.9077,
      1.9064/1.8983, 1.9060/1.8958, 1.9055/1.9192; mean 1.904/1.905
  nanoGPT's GELU (exact erf) and vocab 65         seeds 1337, 1, 2: 1.8933/1.8990, 1.9136/1.8961,
      1.9105/1.9001; mean 1.906/1.898
  with biases (nanoGPT before its bias flag)      seeds 1337, 1, 2: 1.8978/1.8840, 1.8941/1.9007,
      1.9074/1.8946; mean 1.900/1.893
  beta2 0.95                                      seed 1337: 1.9108/1.9224
(the variants were one-line edits of a copy of this script, not options of it). None reaches
nanoGPT's reported 1.88 on average; the 20-batch estimate alone moves by about 0.01 with the
choice of batches.
PyTorch is optional (pip install torch==2.13.0) and never a minillm dependency.
"""

import argparse
import time

import numpy as np

from bench_train import torch_adamw, torch_gpt
from minillm.data import TokenData
from minillm.train.config import TrainConfig, load_config
from minillm.train.pretrain import get_lr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/shakespeare_char")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    import torch

    cfg = load_config(TrainConfig, "shakespeare_char_tiny", [f"--seed={args.seed}"])
    data = TokenData(args.data)
    c = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
             vocab_size=data.vocab_size)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(2)
    model = torch_gpt(c, gpt2_init=True)
    opt = torch_adamw(model, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    batch_rng = np.random.default_rng(cfg.seed)  # the same batch sequence as minillm's loop

    def evaluate(split, n):
        rng = np.random.default_rng(cfg.seed + 1)  # minillm's fixed evaluation batches
        batches = [data.get_batch(split, cfg.batch_size, cfg.block_size, rng) for _ in range(n)]
        model.eval()
        with torch.no_grad():
            losses = [model(torch.from_numpy(x), torch.from_numpy(y)).item() for x, y in batches]
        model.train()
        return float(np.mean(losses))

    t0 = time.time()
    for it in range(cfg.max_iters + 1):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            extra = f", val over 200 batches {evaluate('val', 200):.4f}" if it == cfg.max_iters else ""
            print(f"step {it}: train loss {evaluate('train', cfg.eval_iters):.4f}, "
                  f"val loss {evaluate('val', cfg.eval_iters):.4f}{extra} ({time.time() - t0:.0f} s)",
                  flush=True)
        if it == cfg.max_iters:
            break
        for g in opt.param_groups:
            g["lr"] = get_lr(cfg, it)
        x, y = data.get_batch("train", cfg.batch_size, cfg.block_size, batch_rng)
        loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()


if __name__ == "__main__":
    main()
