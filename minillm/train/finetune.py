"""Fine-tuning a pretrained GPT: SFT or classification, full or LoRA.

    summary = finetune("out/shakespeare_char_tiny", "demo/sft.jsonl", task="sft", method="lora")

One run: load the base checkpoint (and its tokenizer), read the JSONL data (``tasks``), split off
a seeded validation set (stratified by label for classification), adapt the model (LoRA adapters
on the chosen Linear layers, or full training, optionally only the last k blocks), then train for
``epochs`` passes over the training set with AdamW (linear warmup, cosine decay to lr/10) using
the same ``train_step`` as pretraining. The validation metric is measured before training and
after every epoch (SFT: loss on response tokens; classification: accuracy and loss). Checkpoints
go to OUT_DIR/last after every epoch and OUT_DIR/best when the metric improved; a LoRA run saves
adapter directories (a few hundred KB, naming their base), a full run saves whole checkpoints with
the tokenizer. Every evaluation and every ``log_interval`` steps append a record to
OUT_DIR/log.jsonl (``minillm plot OUT_DIR`` draws it).

One step takes ``batch_size x gradient_accumulation_steps`` examples of the epoch's shuffled
order, in micro-batches of ``batch_size`` (the last step of an epoch may have fewer); micro-batch
j of step s masks its dropout with a generator seeded by (seed, s, j). Under ``mpiexec -n N``
(data parallel, minillm.distributed) rank r computes micro-batches r, r+N, ... of each step, the
gradients are summed across ranks and rank 0 alone writes: N ranks train the same run as one
process, and a run resumes on any number of ranks.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from minillm import backend, distributed
from minillm.amp import MixedPrecision
from minillm.autograd import no_grad
from minillm.checkpoints import load
from minillm.checkpoints import run as ckpt
from minillm.checkpoints.adapter import (
    is_adapter_dir,
    load_adapter,
    read_adapter_config,
    resolve_base,
    save_adapter,
)
from minillm.checkpoints.atomic import write_file
from minillm.checkpoints.formats import safetensors_bytes
from minillm.errors import CheckpointError, ConfigError
from minillm.models.classifier import GPTClassifier
from minillm.nn.lora import LoRAConfig, apply_lora
from minillm.optim import AdamW, cosine_lr, gpt_param_groups
from minillm.train import tasks
from minillm.train.pretrain import _truncate_log
from minillm.train.safety import (
    RunLog,
    check_finite,
    check_finite_weights,
    progress_bar_on,
    quiet_on_closed_pipe,
)
from minillm.train.step import micro_batch_seeds, train_step

TASKS, METHODS = ("sft", "classify"), ("lora", "full")


def freeze_except_last(model, k, train_head=True):
    """Train only the last ``k`` blocks of a GPT and its final LayerNorm; freeze the rest.

    In GPT-2 the LM head is tied to the token embedding ``wte`` (one matrix), so "training the
    head" necessarily trains the input embedding too. ``train_head=True`` (for language
    modelling: the output distribution is what SFT changes most) unfreezes the head's matrix
    (``wte``, or ``lm_head`` in a model built with tie_word_embeddings=False); ``train_head=False``
    keeps it frozen (for classification, where the LM head is unused). The position table
    ``wpe`` stays frozen. Returns the number of trainable parameters.
    """
    n_layer = len(model.h)
    if not 0 <= int(k) <= n_layer:
        raise ConfigError(f"freeze_last_k must be between 0 and n_layer={n_layer}, got {k}")
    model.requires_grad_(False)
    for block in list(model.h)[n_layer - int(k) :]:
        block.requires_grad_(True)
    model.ln_f.requires_grad_(True)
    if train_head:
        (model.wte if model.config.tie_word_embeddings else model.lm_head).requires_grad_(True)
    return model.num_parameters(trainable_only=True)


def resolve_checkpoint(path):
    """A checkpoint directory, or OUT_DIR/best or OUT_DIR/last of a training run."""
    found = ckpt.resolve_checkpoint(path)
    if found is not None:
        return found
    raise CheckpointError(
        f"no checkpoint at {path} (expected {ckpt.MODEL_FILE} or adapter_config.json)"
    )


# ----------------------------------------------------------------------------- evaluation
@no_grad()
def sft_val_loss(model, examples, batch_size, pad_id):
    """Mean cross-entropy over all response tokens of ``examples`` (token-weighted, so it does
    not depend on how the examples fall into batches, unlike a mean of batch means)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y = tasks.pad_batch(examples[i : i + batch_size], pad_id)
        n = int((y != tasks.IGNORE).sum())
        if n:
            total += model(x, y)[1].item() * n
            count += n
    model.train(was)
    return total / max(count, 1)


@no_grad()
def classify_eval(model, examples, batch_size, pad_id):
    """(accuracy, mean loss) of a GPTClassifier over [(ids, label, line), ...]."""
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        x, last = tasks.classify_batch([e[0] for e in chunk], pad_id)
        labels = np.array([e[1] for e in chunk])
        logits, batch_loss = model(x, last, labels)
        correct += int((backend.to_numpy(logits.data).argmax(-1) == labels).sum())
        loss += batch_loss.item() * len(chunk)
    model.train(was)
    return correct / max(len(examples), 1), loss / max(len(examples), 1)


# ----------------------------------------------------------------------------- the run
@distributed.job("finetune")
def finetune(
    base,
    data,
    task="sft",
    method="lora",
    rank=8,
    alpha=16.0,
    lora_dropout=0.0,
    targets="attn,mlp",
    epochs=3,
    lr=None,
    batch_size=16,
    block_size=None,
    out_dir="out/finetune",
    freeze_last_k=None,
    seed=1337,
    val_fraction=0.1,
    val_data=None,
    weight_decay=0.0,
    grad_clip=1.0,
    log_interval=10,
    progress=True,
    device="cpu",
    overwrite=False,
    resume=False,
    say=print,
    gradient_accumulation_steps=1,
    precision="float32",
    gradient_checkpointing=False,
):
    """Fine-tune the checkpoint ``base`` on the JSONL file ``data``; returns a summary dict
    (metric before and after, best, trainable/total parameters, seconds per step, paths).
    ``lr`` defaults to 1e-3 for LoRA and 1e-4 for full fine-tuning. An ``out_dir`` that holds
    anything is refused unless ``overwrite`` or ``resume``.

    Exact resume: OUT_DIR/last holds, beside the adapter (or weights), the optimizer arrays and
    the state after its epoch (step, both random generators, best and last metrics); ``resume``
    continues from it with the same settings and logs what an uninterrupted run logs.
    Launched by ``mpiexec -n N``, the N processes train it together (see the module docstring).

    ``precision`` "bfloat16" or "float16" trains in mixed precision (minillm/amp.py: float32
    master weights and optimizer state, the forward and backward in the low precision, loss
    scaling for float16, its state kept in the checkpoint). ``gradient_checkpointing``
    recomputes each block's activations in the backward pass."""
    options = {k: v for k, v in locals().items() if k != "say"}  # the arguments, for check_same
    from tqdm import tqdm

    from minillm.train.config import check_values

    world = distributed.get_world()
    say = quiet_on_closed_pipe(say) if world.is_main else (lambda *a, **k: None)
    # the same options on every rank first: what is then found wrong with them, every rank finds
    distributed.check_same(world, "the options", distributed.fingerprint(options))
    check_values({"rank": rank, "alpha": alpha, "lora_dropout": lora_dropout, "epochs": epochs,
                  "lr": lr, "batch_size": batch_size, "block_size": block_size,
                  "freeze_last_k": freeze_last_k, "seed": seed, "val_fraction": val_fraction,
                  "weight_decay": weight_decay, "grad_clip": grad_clip, "log_interval": log_interval,
                  "gradient_accumulation_steps": gradient_accumulation_steps})
    accum = int(gradient_accumulation_steps)
    distributed.micro_batches_per_rank(world, accum, "gradient-accumulation-steps")
    if device != "cpu" and world.size > 1:
        distributed.use_local_gpu(world)
    out = Path(out_dir)
    if resume and world.is_main:
        ckpt.recover_run(out)
    if not overwrite and not resume and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty (it may hold a fine-tune); pass --resume to "
                          f"continue it, --overwrite to replace its checkpoints and log, or choose "
                          f"another --out (nothing was changed)")
    world.barrier()  # every rank has looked at the folder (rank 0 repaired it) before any write

    if task not in TASKS or method not in METHODS:
        raise ConfigError(
            f"task must be one of {TASKS} and method one of {METHODS}, got {task!r}, {method!r}"
        )
    if freeze_last_k is not None and method != "full":
        raise ConfigError("freeze_last_k applies to method='full' (LoRA already freezes the base)")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ConfigError(
            f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}"
        )
    lr = float(lr if lr is not None else (1e-3 if method == "lora" else 1e-4))
    # mixed precision (minillm/amp.py): float32 master weights, bfloat16/float16 compute
    amp = MixedPrecision(precision)  # a ConfigError for an unknown name
    amp = amp if amp.enabled else None
    backend.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base_path = resolve_checkpoint(base)
    if is_adapter_dir(base_path):
        raise CheckpointError(
            f"the base {base_path} is an adapter; fine-tune from a full checkpoint"
        )
    gpt, tok = load(base_path, device=device)
    if tok is None:
        raise CheckpointError(f"the base {base_path} holds no tokenizer; save it with its tokenizer")
    if block_size is not None:
        if block_size > gpt.config.block_size:
            raise ConfigError(
                f"block_size {block_size} exceeds the base model's {gpt.config.block_size}"
            )
        gpt.crop_block_size(int(block_size))
    gpt.gradient_checkpointing = bool(gradient_checkpointing)
    T, pad = gpt.config.block_size, tok.eos_id  # pad value is never seen: targets ignore it

    # data -> train / val examples
    labels = None
    if task == "sft":
        examples = tasks.load_sft(data, tok, T)
        tr, va = tasks.split_indices(len(examples), 0.0 if val_data else val_fraction, rng)
        train = [examples[i] for i in tr]
        val = tasks.load_sft(val_data, tok, T) if val_data else [examples[i] for i in va]
    else:
        examples, labels = tasks.load_classify(data, tok, T)
        groups = [e[1] for e in examples]
        tr, va = tasks.split_indices(len(examples), 0.0 if val_data else val_fraction, rng, groups)
        train = [examples[i] for i in tr]
        val = (
            tasks.load_classify(val_data, tok, T, labels=labels)[0]
            if val_data
            else [examples[i] for i in va]
        )
        if len(labels) < 2:
            raise ConfigError(
                f"{data} has only one label ({labels[0]!r}); a classifier needs two or more"
            )
    if not train:
        raise ConfigError(f"{data} leaves no training examples after the validation split")

    # the model and what it trains
    net = gpt if task == "sft" else GPTClassifier(gpt, len(labels))
    lora_cfg = None
    if method == "lora":
        lora_cfg = LoRAConfig(rank, alpha, lora_dropout, targets)
        apply_lora(net, lora_cfg.rank, lora_cfg.alpha, lora_cfg.dropout, lora_cfg.targets)
    elif freeze_last_k is not None:
        freeze_except_last(gpt, freeze_last_k, train_head=(task == "sft"))
    else:
        net.requires_grad_(True)
    if task == "classify":
        net.head.requires_grad_(True)  # the new head always trains
    net.train()
    n_trainable, n_total = net.num_parameters(trainable_only=True), net.num_parameters()
    optimizer = AdamW(gpt_param_groups(net, weight_decay), lr=lr, betas=(0.9, 0.99))

    if task == "sft":

        def batch(chunk):
            return tasks.pad_batch(chunk, pad)

        loss_fn = None  # the LM loss, model(x, y)[1]; y is IGNORE at prompt and pad positions

        def evaluate():
            return {"val_loss": sft_val_loss(net, val, batch_size, pad)} if val else {}

    else:

        def batch(chunk):
            x, last = tasks.classify_batch([e[0] for e in chunk], pad)
            return (x, last), np.array([e[1] for e in chunk])

        def loss_fn(m, x, y):
            return m(x[0], x[1], y)[1]

        def evaluate():
            if not val:
                return {}
            acc, loss = classify_eval(net, val, batch_size, pad)
            return {"val_acc": acc, "val_loss": loss}

    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.recover_run(out)
    world.barrier()
    run_cfg = dict(
        base=str(base_path.resolve()),
        data=str(data),
        task=task,
        method=method,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        gradient_accumulation_steps=accum,
        block_size=T,
        freeze_last_k=freeze_last_k,
        seed=seed,
        val_fraction=val_fraction,
        weight_decay=weight_decay,
        lora=lora_cfg and lora_cfg.to_dict(),
        **({"precision": precision} if amp is not None else {}),
    )

    def training_state(epoch, metrics):
        return {"epoch": epoch, **metrics, "step": step, "optimizer_step": optimizer.step_count,
                "rng": rng.bit_generator.state, "global_rng": backend.get_rng_state(),
                "best": best, "before": before, "run": run_cfg,
                **({"amp": amp.state_dict()} if amp is not None else {})}

    def save(directory, metrics, epoch):
        check_finite_weights(net, step, diverge_hint)  # never replace a checkpoint with NaN
        if not world.is_main:  # (checked on every rank: the weights are the same everywhere)
            return
        extra = {"task": task, "labels": labels, "epoch": epoch, **metrics}
        state = training_state(epoch, metrics)
        if method == "lora":
            files = {ckpt.OPTIM_FILE: safetensors_bytes(optimizer.state_arrays()),
                     ckpt.STATE_FILE: json.dumps(state, indent=2).encode()}
            save_adapter(directory, net, lora_cfg, base_path, extra=extra, extra_files=files)
        else:
            ckpt.save(
                directory,
                net,
                config={"model": gpt.config.to_dict(), "finetune": run_cfg, **extra},
                optimizer=optimizer,
                state=state,
                tokenizer=tok,
            )

    def better(m, best):
        if best is None:
            return True
        if "val_acc" in m:
            return (m["val_acc"], -m["val_loss"]) > (best["val_acc"], -best["val_loss"])
        key = "val_loss" if "val_loss" in m else "train_loss"
        return m[key] < best[key]

    per_step = batch_size * accum  # examples per optimizer step, whatever the number of ranks
    steps_per_epoch = math.ceil(len(train) / per_step)
    total = int(epochs) * steps_per_epoch
    warmup = max(1, total // 20)
    say(
        f"finetune {task}/{method}: {len(train)} train / {len(val)} val examples, {total} steps, "
        f"{n_trainable:,} of {n_total:,} parameters trainable ({100 * n_trainable / n_total:.2f}%)"
    )
    diverge_hint = _Hint(out_dir=str(out), learning_rate=lr, grad_clip=grad_clip)
    best, step, step_time, recent, first_epoch = None, 0, 0.0, [], 1
    point = out / "last" if resume and (out / "last" / ckpt.STATE_FILE).is_file() else None
    if resume and point is None and any(ckpt.is_checkpoint_dir(out / sub) for sub in ckpt.RUN_SUBDIRS):
        raise CheckpointError(f"{out} holds checkpoints without a training state, so there is "
                              f"nothing to resume exactly; pass --overwrite to start afresh")
    if resume and point is None:
        say(f"no complete fine-tuning checkpoint in {out} yet; starting from the beginning")
    if point is not None:
        state = ckpt.read_json(point / ckpt.STATE_FILE)
        # the base may have moved (--base names its new place): the adapter's fingerprint, not
        # the path, says whether it is the same base (load_adapter checks it)
        now = {k: v for k, v in json.loads(json.dumps(run_cfg)).items() if k != "base"}
        saved_run = state.get("run") if isinstance(state, dict) else None
        if not isinstance(saved_run, dict) or {k: v for k, v in saved_run.items() if k != "base"} != now:
            saved = saved_run if isinstance(saved_run, dict) else {}
            diff = sorted(k for k in set(saved) | set(now) if k != "base" and saved.get(k) != now.get(k))
            raise ConfigError(f"{point} was trained with other settings ({', '.join(diff) or 'unknown'}); "
                              f"resume with the same options, or pass --overwrite to start afresh")
        if method == "lora":
            load_adapter(net, point)
        else:
            ckpt.load_into(net, point)
        try:
            optimizer.load_state_arrays(ckpt.read_safetensors(point / ckpt.OPTIM_FILE), state["optimizer_step"])
            step, first_epoch = int(state["step"]), int(state["epoch"]) + 1
            best, before = state["best"], state["before"]
            metrics = {k: state[k] for k in ("train_loss", "val_loss", "val_acc") if k in state}
            rng.bit_generator.state = state["rng"]
            backend.set_rng_state(state["global_rng"])
            if amp is not None and "amp" in state:
                amp.load_state_dict(state["amp"])  # the loss scale continues where it was
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{point / ckpt.STATE_FILE} is damaged ({type(e).__name__}: {e})") from None
        if world.is_main:
            _truncate_log(out / "log.jsonl", step)
        say(f"resuming {point} after epoch {first_epoch - 1} (step {step})")
    elif world.is_main:
        write_file(out / "log.jsonl", b"")
    # every rank trains on the same data from the same checkpoint
    distributed.check_same(world, "the data or the checkpoints to resume",
                           distributed.fingerprint(len(train), len(val), step))
    log = RunLog(out / "log.jsonl", enabled=world.is_main)
    if point is None:
        before = evaluate()
        log.write({"step": 0, "epoch": 0, **before})
        say(f"before fine-tuning: {_fmt(before)}")
    bar = tqdm(total=total, initial=step, desc=f"finetune {task}/{method}", unit="step",
               disable=not (world.is_main and progress_bar_on(progress)), file=sys.stderr)

    def micro_batches(chunk, n_micro, step):
        for j in world.my_micro_batches(n_micro):
            backend.manual_seed(micro_batch_seeds(seed, step, j)[1])  # this micro-batch's dropout
            yield batch([train[k] for k in chunk[j * batch_size : (j + 1) * batch_size]])

    try:
        for epoch in range(first_epoch, int(epochs) + 1):
            order = rng.permutation(len(train))
            for i in range(0, len(order), per_step):
                chunk = order[i : i + per_step]
                n_micro = math.ceil(len(chunk) / batch_size)
                lr_t = cosine_lr(step, lr, warmup, total, lr / 10)
                t0 = time.perf_counter()
                loss, norm = train_step(net, optimizer, micro_batches(chunk, n_micro, step), grad_clip,
                                        lr_t, loss_fn, n_micro=n_micro, world=world, amp=amp)
                check_finite({"loss": loss, "gradient norm": norm if grad_clip else 0.0},
                              step + 1, diverge_hint)
                step_time += time.perf_counter() - t0
                step += 1
                recent.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if step % log_interval == 0 or step == total:
                    log.write(
                        {
                            "step": step,
                            "epoch": epoch,
                            "train_loss": float(np.mean(recent)),
                            "lr": lr_t,
                            "grad_norm": norm,
                        },
                    )
            metrics = {"train_loss": float(np.mean(recent)), **evaluate()}
            recent = []
            log.write({"step": step, "epoch": epoch, **metrics})
            check_finite(metrics, step, diverge_hint)
            say(f"epoch {epoch}: {_fmt(metrics)}")
            if better(metrics, best):  # best/ first: both then hold the same training state
                best = metrics
                save(out / "best", metrics, epoch)
            save(out / "last", metrics, epoch)
    finally:
        bar.close()
        log.close()
    return {
        "task": task,
        "method": method,
        "before": before,
        "after": metrics,
        "best": best,
        "trainable_params": n_trainable,
        "total_params": n_total,
        "steps": step,
        "sec_per_step": step_time / max(step, 1),
        "out_dir": str(out),
        "labels": labels,
    }


class _Hint:
    """The settings a divergence message names (as pretrain's config does)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _fmt(m):
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items()) or "no validation set"


# ----------------------------------------------------------------------------- inference
def load_classifier(path, device="cpu"):
    """(classifier, tokenizer, labels) from a fine-tuned classification checkpoint: an adapter
    directory (its base is loaded, LoRA applied and merged) or a full classifier checkpoint."""
    from minillm.models import GPT
    from minillm.nn.lora import merge_lora

    path = resolve_checkpoint(path)
    cfg = read_adapter_config(path) if is_adapter_dir(path) else ckpt.load_config(path)
    if cfg.get("task") != "classify" or not cfg.get("labels"):
        raise CheckpointError(
            f"{path} is not a classification checkpoint (no task 'classify' with labels)"
        )
    labels = list(cfg["labels"])
    if is_adapter_dir(path):
        gpt, tok = load(resolve_base(path, cfg), device=device)
        net = GPTClassifier(gpt, len(labels))
        load_adapter(net, path)
        merge_lora(net)
    else:
        config = ckpt.model_config(cfg, path / ckpt.CONFIG_FILE)  # checked before anything is built
        net = GPTClassifier(GPT(config, init=False), len(labels))
        ckpt.load_into(net, path)
        if device != "cpu":
            net.to(device)
        tok = ckpt.load_tokenizer(path)
    return net.eval(), tok, labels


@no_grad()
def classify_texts(net, tokenizer, labels, texts):
    """[{label: probability, ...}, ...] for each text (sorted, most likely first)."""
    seqs = [
        tasks.classify_ids(tokenizer, tokenizer.encode(t), net.config.block_size) for t in texts
    ]
    x, last = tasks.classify_batch(seqs, tokenizer.eos_id)
    logits = backend.to_numpy(net(x, last)[0].data).astype(np.float64)  # (B, n_classes)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return [dict(sorted(zip(labels, row.tolist()), key=lambda kv: -kv[1])) for row in p]
