"""Fine-tuning a pretrained chat model (any model ``minillm.load`` reads: a built-in name, a
GGUF file, a Hugging Face Llama directory) on chat JSONL, with LoRA or full training.

    summary = finetune_chat("smollm2-135m-instruct", "demo/train.jsonl", dtype="q8_0",
                            eval_data="demo/heldout.jsonl", out_dir="out/chat")

The base is loaded with ``dtype`` ("stored" keeps the file's blocks, "q8_0" requantizes,
"float32" dequantizes). LoRA adapts the chosen projections (``targets``: q,k,v,o,gate,up,down or
the groups attn, mlp, all); on a quantized base the base stays in its blocks, frozen, and only
the float32 adapters train (QLoRA). Full training needs a float32 base (blocks cannot take a
gradient step). The data is chat JSONL (``minillm.train.chat_data``; ``{"prompt", "response"}``
lines are taken as one user turn and one assistant reply), rendered through the model's own
chat template, with the loss on assistant tokens only.

Before and after training, with ``eval_data`` (chat JSONL whose last message is the expected
reply, see ``minillm.train.evaluate``), the held-out assistant-token loss and contains-answer
accuracy are measured. The LoRA adapter is written to OUT_DIR/adapter in PEFT's layout
(``minillm.checkpoints.peft``); a full run writes OUT_DIR/model as a Hugging Face Llama
directory. OUT_DIR/log.jsonl holds the training log and OUT_DIR/summary.json the numbers.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from minillm import backend, distributed
from minillm.errors import ConfigError
from minillm.nn.lora import LoRAConfig, apply_lora, lora_layers
from minillm.optim import AdamW, cosine_lr, gpt_param_groups
from minillm.train import tasks
from minillm.train.chat_data import chat_example, detect_task, load_chat, template_for
from minillm.train.evaluate import evaluate_chat
from minillm.train.safety import progress_bar_on
from minillm.train.step import train_step


def load_base(base, dtype=None, device="cpu"):
    """(model, tokenizer) through minillm.load; ``dtype`` only where the format takes it."""
    from minillm.checkpoints.loader import load

    return load(base, device=device, **({"dtype": dtype} if dtype else {}))


def load_examples(path, tokenizer, block_size):
    """[(x, y), ...] of a chat file, or of a {"prompt", "response"} file taken as chat turns."""
    task = detect_task(path)
    if task == "chat":
        return load_chat(path, tokenizer, block_size)
    if task == "classify":
        raise ConfigError(f"{path} holds classification data; chat fine-tuning takes chat "
                          "({\"messages\": [...]}) or {\"prompt\", \"response\"} lines")
    template = template_for(tokenizer)
    out = []
    for _, rec in tasks.read_jsonl(path, ("prompt", "response")):
        msgs = [{"role": "user", "content": rec["prompt"]},
                {"role": "assistant", "content": rec["response"]}]
        ex = chat_example(tokenizer, template, msgs, block_size)
        if ex is not None:
            out.append(ex)
    return out


def total_weights(model):
    """Every weight of the model: its Parameters plus the frozen quantized matrices (which are
    not Parameters), a matrix shared by two layers (a tied head) once."""
    from minillm.nn.quant import named_quant_weights

    quant = {id(w): w for _, w in named_quant_weights(model)}
    quant.update({id(m.quant_base): m.quant_base for _, m in lora_layers(model)
                  if m.quant_base is not None})
    return model.num_parameters() + sum(w.shape[0] * w.shape[1] for w in quant.values())


def finetune_chat(base, data, dtype=None, method="lora", rank=8, alpha=16.0, targets="all",
                  epochs=3, lr=None, batch_size=8, block_size=256, out_dir="out/finetune",
                  seed=1337, weight_decay=0.0, grad_clip=1.0, eval_data=None, max_new_tokens=24,
                  max_steps=None, log_interval=10, progress=True, device="cpu", say=print,
                  gradient_checkpointing=False):
    """Fine-tune ``base`` on ``data``; returns a summary dict (before/after held-out metrics,
    trainable/total parameters, steps, seconds, peak resident memory, paths). ``lr`` defaults
    to 1e-3 for LoRA and 2e-5 for full training.

    The loss runs through the chunked head + cross-entropy on the assistant rows only
    (``model.chunked_loss``: the (B*T, V) logits never exist); ``gradient_checkpointing``
    recomputes each block's activations in the backward (less memory, about a third more
    compute)."""
    from tqdm import tqdm

    from minillm.checkpoints.peft import save_peft

    if distributed.get_world().size > 1:  # N copies would write one folder: refuse
        raise ConfigError("chat fine-tuning (--task chat) runs in one process; launch it without "
                          "mpiexec (pretrain and SFT/classify fine-tuning run data-parallel)")
    if method not in ("lora", "full"):
        raise ConfigError(f"method must be 'lora' or 'full', got {method!r}")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ConfigError(f"epochs and batch_size must be at least 1, got {epochs} and "
                          f"{batch_size}")
    lr = float(lr if lr is not None else (1e-3 if method == "lora" else 2e-5))
    backend.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, tok = load_base(base, dtype, device)
    if tok is None:
        raise ConfigError(f"the base {base} holds no tokenizer")
    if block_size and block_size < model.config.block_size:
        model.crop_block_size(int(block_size))
    T = model.config.block_size
    train = load_examples(data, tok, T)

    lora_cfg = None
    if method == "lora":
        lora_cfg = LoRAConfig(rank, alpha, 0.0, targets)
        apply_lora(model, lora_cfg.rank, lora_cfg.alpha, 0.0, lora_cfg.targets)
    else:
        from minillm.nn.quant import named_quant_weights

        if next(iter(named_quant_weights(model)), None) is not None:
            raise ConfigError("full fine-tuning needs a float32 base (--dtype float32); a "
                              "quantized base trains with --method lora")
        model.requires_grad_(True)
    model.train()
    model.chunked_loss = True
    model.gradient_checkpointing = bool(gradient_checkpointing)
    n_trainable = model.num_parameters(trainable_only=True)
    n_total = total_weights(model)
    optimizer = AdamW(gpt_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.99))

    def evaluate():
        if not eval_data:
            return {}
        m, _ = evaluate_chat(model, tok, eval_data, T, max_new_tokens, batch_size)
        model.train()
        return {"heldout_accuracy": m["accuracy"], "heldout_loss": m["loss"]}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = int(epochs) * steps_per_epoch
    if max_steps:
        total = min(total, int(max_steps))
    warmup = max(1, total // 20)
    say(f"finetune chat/{method}: {len(train)} conversations, {total} steps, {n_trainable:,} "
        f"of {n_total:,} parameters trainable ({100 * n_trainable / n_total:.2f}%)")
    before = evaluate()
    if before:
        say("before: " + _fmt(before))
    log = open(out / "log.jsonl", "w", encoding="utf-8")
    step, seconds, recent = 0, 0.0, []
    bar = tqdm(total=total, desc=f"finetune chat/{method}", unit="step", file=sys.stderr,
               disable=not progress_bar_on(progress))  # a log file gets no bar frames
    try:
        _log(log, {"step": 0, **before})
        while step < total:
            order = rng.permutation(len(train))
            for i in range(0, len(order), batch_size):
                if step >= total:
                    break
                x, y = tasks.pad_batch([train[j] for j in order[i: i + batch_size]], tok.eos_id)
                lr_t = cosine_lr(step, lr, warmup, total, lr / 10)
                t0 = time.perf_counter()
                loss, norm = train_step(model, optimizer, [(x, y)], grad_clip, lr_t)
                seconds += time.perf_counter() - t0
                step += 1
                recent.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if step % log_interval == 0 or step == total:
                    _log(log, {"step": step, "train_loss": float(np.mean(recent)), "lr": lr_t,
                               "grad_norm": norm})
                    recent = []
    finally:
        bar.close()
    after = evaluate()
    _log(log, {"step": step, **after})
    log.close()
    if after:
        say("after: " + _fmt(after))
    if method == "lora":
        path = out / "adapter"
        save_peft(path, model, lora_cfg, base, base_dtype=dtype)
    else:
        from minillm.checkpoints.hf_llama import export_hf_llama

        path = out / "model"
        export_hf_llama(model.eval(), tok, path)
    summary = {"method": method, "base": str(base), "dtype": dtype, "before": before,
               "after": after, "trainable_params": n_trainable, "total_params": n_total,
               "steps": step, "train_seconds": seconds, "saved": str(path),
               "peak_rss_mib": peak_rss_mib(), "gradient_checkpointing": bool(gradient_checkpointing),
               "lora_layers": len(lora_layers(model))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def peak_rss_mib():
    """The process's peak resident memory so far, MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def _log(f, rec):
    f.write(json.dumps(rec) + "\n")
    f.flush()


def _fmt(m):
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())
