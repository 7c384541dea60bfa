"""Pretraining: next-token prediction on a prepared corpus (the loop nanoGPT's train.py runs).

Per iteration ``it`` (0-based): every ``eval_interval`` iterations, and at the end, estimate the
train and val loss (fixed batches, eval mode), save OUT_DIR/last (full training state) and, when
val improved, OUT_DIR/best; then one optimizer step of ``gradient_accumulation_steps``
micro-batches with the learning rate of the warmup + cosine schedule, gradient clipping, AdamW.

Data order: micro-batch j of iteration s is drawn from a generator seeded by (seed, s, j), and
its dropout masks from another seeded by the same three numbers, so the batches do not depend
on how many processes train or on where a run stopped. Under ``mpiexec -n N`` (data parallel,
minillm.distributed) rank r computes micro-batches r, r+N, ... of each iteration
(gradient_accumulation_steps / N each), the gradients are summed across ranks, and rank 0 alone
writes checkpoints, the log and the progress bar: N ranks train the same run as one process.

Exact resume: OUT_DIR/last holds the weights, the AdamW moments, the iteration to run next and
the seed of the batch order. ``--resume`` restores them, so the resumed run (on any number of
ranks) draws the same batches and dropout masks and logs the same losses as a run that never
stopped. Ctrl-C finishes the current step, saves OUT_DIR/last and exits cleanly (a second
Ctrl-C stops at once; the last saved checkpoint stays intact either way).

After a kill: both commands first repair the folder (``checkpoints.run.recover_run``: a
moved-aside copy put back, temporary copies deleted). ``--resume`` then continues from the
newest checkpoint with a full training state (last/, or best/ when a kill came between the
two writes of one evaluation: best/ holds the same state), and from iteration 0 when there is
none yet. log.jsonl is appended one line at a time and rewritten only atomically. A non-finite
loss or gradient norm stops the run (DivergenceError, exit status 3) before anything is saved.
"""

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from minillm import backend, distributed
from minillm.amp import MixedPrecision
from minillm.checkpoints import run as ckpt
from minillm.checkpoints.atomic import write_file
from minillm.data import TokenData, corpus_sha256, finish_prepare, prepare, read_corpus
from minillm.errors import CheckpointError, ConfigError, DataError
from minillm.models import GPT, GPTConfig
from minillm.optim import AdamW, cosine_lr, gpt_param_groups
from minillm.train.progress import plain_every, plain_line, will_compile
from minillm.train.safety import (
    RunLog,
    check_finite,
    check_finite_weights,
    progress_bar_on,
    quiet_on_closed_pipe,
)
from minillm.train.step import estimate_loss, micro_batch_seeds, train_step


def get_lr(cfg, it):
    if not cfg.decay_lr:
        return cfg.learning_rate
    return cosine_lr(it, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr)


def load_data(cfg, progress=True, say=print):
    """TokenData for cfg.data_dir, preparing it from cfg.corpus first if it is not there."""
    meta = Path(cfg.data_dir) / "meta.json"
    finish_prepare(cfg.data_dir)  # new data a crashed `prepare` staged completely
    if not meta.exists():
        say(f"preparing {cfg.data_dir} from {cfg.corpus or 'the default corpus (tiny Shakespeare)'}")
        prepare(cfg.data_dir, corpus=cfg.corpus or None, tokenizer=cfg.tokenizer,
                vocab_size=cfg.vocab_size, model_type=cfg.tokenizer_model, progress=progress)
    data = TokenData(cfg.data_dir)
    _check_same_corpus(cfg, data.meta)
    kind = data.meta.get("tokenizer")
    if kind and kind != cfg.tokenizer:
        raise ConfigError(
            f"{cfg.data_dir} holds {kind}-tokenized data but the config says tokenizer = "
            f"{cfg.tokenizer!r}; use another data_dir or run `minillm prepare` again"
        )
    for split in ("train", "val"):
        n = len(getattr(data, split))
        if n <= cfg.block_size:
            raise DataError(
                f"the {split} split of {cfg.data_dir} has {n} tokens, too few for block_size "
                f"{cfg.block_size}; use a smaller block_size or a larger corpus"
            )
    return data


def _check_same_corpus(cfg, meta):
    """Refuse prepared data made from another corpus than the one the config names (it would
    train on the old text without a word). Without ``corpus`` the prepared data is used as is,
    so ``minillm prepare --out DIR`` then ``pretrain --data_dir=DIR`` works."""
    if not cfg.corpus:
        return
    made_from = meta.get("corpus", {})
    if made_from.get("sha256") not in (None, corpus_sha256(read_corpus(cfg.corpus))):
        raise ConfigError(
            f"{cfg.data_dir} was prepared from another corpus ({made_from.get('name')}) than "
            f"{cfg.corpus}; use another data_dir or run `minillm prepare` again"
        )


def train_micro_batch(data, seed, step, j, batch_size, block_size):
    """(x, y, dropout_seed) of micro-batch ``j`` of iteration ``step``: drawn from a generator
    seeded by (seed, step, j) alone, so it is the same whichever rank computes it."""
    batch_seed, dropout_seed = micro_batch_seeds(seed, step, j)
    x, y = data.get_batch("train", batch_size, block_size, np.random.default_rng(batch_seed))
    return x, y, dropout_seed


def build_model(cfg, vocab_size):
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias,
                          tie_word_embeddings=cfg.tie_word_embeddings,
                          initializer_range=cfg.initializer_range))
    model.gradient_checkpointing = cfg.gradient_checkpointing
    if cfg.dtype == "float64":
        model.to(dtype=np.float64)
    if cfg.device != "cpu":
        model.to(cfg.device)
    return model


class _StopFlag:
    """SIGINT handler: the first Ctrl-C asks the loop to stop after this step; a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _check_resume_shape(saved, cfg, vocab_size, directory):
    model = saved.get("model", {})
    want = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                block_size=cfg.block_size, bias=cfg.bias, vocab_size=vocab_size)
    diff = [f"{k}={model.get(k)} (config: {v})" for k, v in want.items() if model.get(k) != v]
    if diff:
        raise CheckpointError(
            f"{directory} holds a model of a different shape: {', '.join(diff)}; use the same "
            f"model settings to resume, or another out_dir to start afresh"
        )


@distributed.job("pretrain")
def pretrain(cfg, resume=False, progress=True, say=print):
    """Run pretraining as ``cfg`` says; returns a summary dict (losses, time, throughput).
    Launched by ``mpiexec -n N``, the N processes train it together (data parallel)."""
    from tqdm import tqdm

    world = distributed.get_world()
    say = quiet_on_closed_pipe(say) if world.is_main else (lambda *a, **k: None)
    # the same config on every rank first: what is then found wrong with it, every rank finds
    distributed.check_same(world, "the configs", distributed.fingerprint(cfg.to_dict()))
    local_micro = distributed.micro_batches_per_rank(world, cfg.gradient_accumulation_steps)
    if cfg.device != "cpu" and world.size > 1:
        distributed.use_local_gpu(world)
    backend.manual_seed(cfg.seed)
    backend.set_kernels(cfg.kernels)
    out = Path(cfg.out_dir)
    last_dir, best_dir, log_path = out / "last", out / "best", out / "log.jsonl"
    writes = not cfg.eval_only and world.is_main  # rank 0 alone writes
    if writes:
        ckpt.recover_run(out)  # decide from the repaired folder, not from a crash's leftovers
    world.barrier()  # the other ranks read the folder rank 0 repaired
    point = ckpt.resume_point(out) if resume else None
    if not resume and not cfg.eval_only and (ckpt.is_checkpoint_dir(last_dir) or ckpt.is_checkpoint_dir(best_dir)):
        raise ConfigError(
            f"{out} already holds checkpoints; pass --resume to continue them, or choose another "
            f"--out_dir (nothing was overwritten)"
        )
    if world.is_main:
        data = load_data(cfg, progress, say)  # prepares the data when it is not there yet
    world.barrier()
    if not world.is_main:
        data = load_data(cfg, False, say)
    tokenizer = data.tokenizer()
    model = build_model(cfg, data.vocab_size)
    optimizer = AdamW(gpt_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                      betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    batch_seed = cfg.seed  # of the batch order (see train_micro_batch); a resumed run keeps its own
    start, best_val, elapsed0 = 0, float("inf"), 0.0
    # mixed precision (minillm/amp.py): float32 master weights, bfloat16/float16 compute
    amp = MixedPrecision(cfg.dtype) if cfg.dtype in ("bfloat16", "float16") else None

    if resume and point is None and not cfg.eval_only and (ckpt.is_checkpoint_dir(last_dir) or ckpt.is_checkpoint_dir(best_dir)):
        raise CheckpointError(f"{out} holds checkpoints but none with a complete training state "
                              f"(weights, optimizer, step, batch seed and random generator "
                              f"state), so there is nothing to resume exactly; choose another "
                              f"--out_dir")
    if resume and point is None:
        resume = False  # a crash before the first checkpoint: the same run, from iteration 0
        say(f"no complete checkpoint in {out} yet; starting from iteration 0")
    if resume:
        saved = ckpt.load_config(point)
        _check_resume_shape(saved, cfg, data.vocab_size, point)
        ckpt.load_into(model, point)
        state = ckpt.load_training_state(point, optimizer)
        try:
            start, best_val = int(state["step"]), float(state["best_val_loss"])
            elapsed0 = float(state.get("elapsed", 0.0))
            batch_seed = state["batch_seed"]
            if isinstance(batch_seed, bool) or not isinstance(batch_seed, int) or batch_seed < 0:
                raise ValueError(f"batch_seed {batch_seed!r} is not a seed")
            backend.set_rng_state(state["global_rng"])
            if amp is not None and "amp" in state:
                amp.load_state_dict(state["amp"])  # the loss scale continues where it was
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{point / ckpt.STATE_FILE} is damaged ({type(e).__name__}: {e}); "
                                  f"resume from a copy of the run or start afresh") from None
        if start < 0:
            raise CheckpointError(f"{point / ckpt.STATE_FILE} says step {start}; it is damaged")
        if writes:
            _truncate_log(log_path, start)
        if point.name != "last":
            say(f"{last_dir} is older than {point} (a crash between their writes); resuming from {point}")
        say(f"resuming {point} at iteration {start} (best val loss so far {best_val:.4f})")
    elif writes:
        out.mkdir(parents=True, exist_ok=True)
        write_file(log_path, b"")  # a new run: a log a crashed attempt left is replaced

    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    # every rank trains on the same data from the same checkpoint
    distributed.check_same(world, "the data files or the checkpoints to resume",
                           distributed.fingerprint(len(data.train), len(data.val), data.meta,
                                                   start, batch_seed))
    n_params = model.num_parameters()
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    flops_per_iter = model.flops_per_token(cfg.block_size) * tokens_per_iter
    say(f"model: {n_params / 1e6:.2f}M parameters, vocab {data.vocab_size}, "
        f"{tokens_per_iter:,} tokens per iteration, kernels={backend.get_kernels()}"
        + (f", {world.size} ranks x {local_micro} micro-batch{'es' if local_micro > 1 else ''}"
           if world.size > 1 else ""))

    def eval_batches(split):
        rng = np.random.default_rng(cfg.seed + 1)  # the same batches at every evaluation
        return [data.get_batch(split, cfg.batch_size, cfg.block_size, rng) for _ in range(cfg.eval_iters)]

    eval_sets = {s: eval_batches(s) for s in ("train", "val")}

    def evaluate(batches):
        """Mean loss over the fixed batches, rank r taking batches r, r+N, ... (the same value
        on every rank)."""
        mine = [batches[i] for i in world.my_micro_batches(len(batches))]
        local = sum(estimate_loss(model, [b]) for b in mine)
        return float(world.sum([local])[0]) / len(batches)

    def micro_batches(step):
        for j in world.my_micro_batches(cfg.gradient_accumulation_steps):
            x, y, dropout_seed = train_micro_batch(data, batch_seed, step, j, cfg.batch_size,
                                                   cfg.block_size)
            backend.manual_seed(dropout_seed)  # drawn just before this micro-batch's forward
            yield x, y

    def checkpoint_state(step):
        return {"step": step, "best_val_loss": best_val, "batch_seed": batch_seed,
                "global_rng": backend.get_rng_state(), "elapsed": elapsed0 + time.time() - t0,
                "optimizer_step": optimizer.step_count,
                **({"amp": amp.state_dict()} if amp is not None else {})}

    def save_full(directory, step):
        check_finite_weights(model, step, cfg)  # never replace a checkpoint with NaN weights
        if not writes:  # (checked on every rank: the weights are the same on all of them)
            return
        ckpt.save(directory, model, config={"model": model.config.to_dict(), "train": cfg.to_dict()},
                  optimizer=optimizer, state=checkpoint_state(step), tokenizer=tokenizer)

    def save_last(step):
        save_full(last_dir, step)

    log = RunLog(log_path, enabled=writes)
    stop = _StopFlag()
    old_handler = signal.signal(signal.SIGINT, stop) if _main_thread() else None
    bar = tqdm(total=cfg.max_iters, initial=start, desc="pretrain", unit="it",
               disable=not (world.is_main and progress_bar_on(progress)), dynamic_ncols=True,
               file=sys.stderr)
    # no bar (a log file, a pipe): a plain line every few log records instead (rank 0 only)
    lines_every = plain_every(cfg) if progress and world.is_main and bar.disable else 0
    if world.is_main and will_compile(cfg):
        say("compiling kernels (first run only: Numba caches them for later runs)...")
    t0 = time.time()
    summary = {"params": n_params, "interrupted": False}
    it, last_eval = start, None
    try:
        while True:
            if resume and it == start and point.name != "last":
                save_last(it)  # last/ is older than best/ (a crash between them): bring it level
            due = it % cfg.eval_interval == 0 or it == cfg.max_iters
            if cfg.eval_only or (due and not (resume and it == start)):  # resumed: done before
                losses = {s: evaluate(b) for s, b in eval_sets.items()}
                check_finite({"train loss": losses["train"], "val loss": losses["val"]}, it, cfg)
                last_eval = {"step": it, "train_loss": losses["train"], "val_loss": losses["val"],
                             "val_ppl": float(np.exp(losses["val"]))}
                log.write(last_eval)
                msg = (f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                       f" (ppl {last_eval['val_ppl']:.2f})")
                if not bar.disable:
                    bar.write(msg, file=sys.stderr)  # above the bar, not through it
                else:
                    say(msg)
                if cfg.eval_only:
                    break
                if losses["val"] < best_val:
                    best_val = losses["val"]
                    # the full training state, so that a crash before last/ is written can
                    # resume from best/ exactly
                    save_full(best_dir, it)
                if it > start or not resume:
                    save_last(it)
            if it >= cfg.max_iters:
                break
            lr = get_lr(cfg, it)
            t_step = time.time()
            loss, norm = train_step(model, optimizer, micro_batches(it), cfg.grad_clip, lr,
                                    n_micro=cfg.gradient_accumulation_steps, world=world,
                                    amp=amp)
            check_finite({"loss": loss, "gradient norm": norm if cfg.grad_clip else 0.0}, it + 1, cfg)
            dt = time.time() - t_step
            it += 1
            bar.update(1)
            if it % cfg.log_interval == 0 or it == 1:
                rec = {"step": it, "loss": loss, "lr": lr, "grad_norm": norm,
                       "tok_per_s": tokens_per_iter / dt, "gflops": flops_per_iter / dt / 1e9,
                       "elapsed": elapsed0 + time.time() - t0}
                if amp is not None and amp.scaler is not None:
                    rec.update(loss_scale=amp.scaler.scale, skipped_steps=amp.scaler.skipped)
                log.write(rec)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rec['tok_per_s']:.0f}")
                if lines_every and it % lines_every == 0:
                    say(plain_line(it, cfg, rec))
            if world.any(stop.requested):  # Ctrl-C reaches every rank, not always in one step
                save_last(it)
                summary["interrupted"] = True
                say(f"interrupted at iteration {it}: saved {last_dir}; continue with --resume")
                break
    finally:
        bar.close()
        log.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)

    wall = time.time() - t0
    trained = it - start
    summary.update(
        step=it, best_val_loss=best_val, wall_time=wall, elapsed=elapsed0 + wall,
        tok_per_s=trained * tokens_per_iter / wall if trained and wall > 0 else None,
        **({"train_loss": last_eval["train_loss"], "val_loss": last_eval["val_loss"]} if last_eval else {}),
    )
    if not summary["interrupted"] and not cfg.eval_only and world.is_main:
        say(f"done: {it} iterations in {wall:.0f} s, best val loss {best_val:.4f}; "
            f"checkpoints in {out}/best and {out}/last")
        if cfg.plot:
            _plot(out, say)
        if cfg.sample_tokens > 0:
            _print_sample(model, tokenizer, cfg, say)
    return summary


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


def _truncate_log(path, step):
    """Drop log records past ``step`` (the resumed run logs those iterations again). A train
    record's step counts iterations done; the eval at ``step`` ran before the checkpoint. The
    file is replaced atomically: a crash here leaves the old log or the new one."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step", 0), (int, float)) and rec.get("step", 0) <= step:
            keep.append(line)
    write_file(path, "".join(line + "\n" for line in keep).encode("utf-8"))


def _plot(out, say):
    from minillm.train.plot import NoMatplotlib, plot_log

    try:
        say(f"loss curve: {plot_log(out)}")
    except NoMatplotlib as e:
        say(f"loss curve skipped: {e}")


def _print_sample(model, tokenizer, cfg, say):
    from minillm.sample import generate

    text = generate(model, tokenizer, cfg.sample_prompt, max_new_tokens=cfg.sample_tokens,
                    temperature=cfg.sample_temperature, top_k=cfg.sample_top_k, seed=cfg.seed)
    say("sample:\n" + "-" * 40 + "\n" + cfg.sample_prompt + text + "\n" + "-" * 40)
