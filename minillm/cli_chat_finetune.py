"""The command-line side of chat fine-tuning: the flags ``minillm finetune`` gains for a
pretrained chat model (--model / --ckpt / --dtype / --eval / --max-steps, --task chat), the
``minillm eval`` command, and ``minillm finetune-demo-data --task chat``.

``minillm.cli`` calls in here through three hooks: ``add_chat_finetune_flags`` while building
the finetune parser, ``chat_finetune_hook`` first thing in ``run_finetune`` (it runs the chat
fine-tuning and returns True, or fills in the auto-detected task and returns False), and
``chat_demo_hook`` first thing in ``run_finetune_demo_data``.
"""

from minillm.cli_models import add_model_flags, load_for_sampling


def add_chat_finetune_flags(p):
    p.add_argument("--model", metavar="NAME", default=None,
                   help="chat fine-tuning of a built-in model (smollm2-135m-instruct)")
    p.add_argument("--ckpt", default=None,
                   help="chat fine-tuning of a model file minillm.load reads (.gguf, a Hugging "
                        "Face Llama directory)")
    p.add_argument("--dtype", choices=("stored", "float32", "q8_0"), default=None,
                   help="base weights in memory: as stored, float32, or requantized to q8_0 "
                        "(LoRA on a quantized base keeps it quantized and frozen)")
    p.add_argument("--eval", default=None, metavar="HELDOUT",
                   help="held-out chat JSONL: contains-answer accuracy and assistant-token loss "
                        "before and after training")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--max-new-tokens", type=int, default=24,
                   help="reply length for --eval (default: %(default)s)")
    p.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute each block's activations in the backward pass: less memory "
                        "(longer sequences fit), about a third more compute")


def chat_finetune_hook(args):
    """Run chat fine-tuning when --model/--ckpt or --task chat (or chat data) asks for it and
    return True; otherwise set args.task for the checkpoint path and return False."""
    from minillm.errors import ConfigError
    from minillm.train.chat_data import detect_task

    task = args.task or detect_task(args.data)
    source = args.model or args.ckpt
    if task != "chat" and source is None:
        if args.base is None:
            raise ConfigError("finetune needs --base CHECKPOINT, or --model NAME / --ckpt FILE")
        args.task = task
        return False
    if args.base is not None and source is not None:
        raise ConfigError("pass one of --base, --model and --ckpt")
    source = source or args.base
    if args.model and args.ckpt:
        raise ConfigError("pass either --model or --ckpt, not both")
    if args.resume:
        raise ConfigError("--resume continues a checkpoint fine-tune (sft or classify data); "
                          "a chat fine-tune saves its adapter at the end and starts afresh "
                          "(nothing was changed)")
    from minillm.train.finetune_chat import finetune_chat

    s = finetune_chat(source, args.data, dtype=args.dtype, method=args.method, rank=args.rank,
                      alpha=args.alpha, targets=args.targets, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, block_size=args.block_size or 256,
                      out_dir=args.out, seed=args.seed, weight_decay=args.weight_decay,
                      eval_data=args.eval, max_new_tokens=args.max_new_tokens,
                      max_steps=args.max_steps, device=args.device,
                      progress=not args.no_progress,
                      gradient_checkpointing=args.grad_checkpoint)
    rss = f", peak RSS {s['peak_rss_mib']:.0f} MiB" if s["peak_rss_mib"] else ""
    print(f"done: {s['steps']} steps in {s['train_seconds']:.0f} s{rss}; saved {s['saved']}")
    for key in ("before", "after"):
        if s[key]:
            print(f"{key}: held-out accuracy {100 * s[key]['heldout_accuracy']:.0f}%, "
                  f"assistant-token loss {s[key]['heldout_loss']:.4f}")
    return True


def chat_demo_hook(args):
    """Write the chat demo (--task chat) and return True; False for the other demo data."""
    if getattr(args, "task", None) != "chat":
        return False
    from minillm.train.demo_chat import make_chat_demo

    n = make_chat_demo(args.out, seed=args.seed)
    print(f"wrote {args.out}/train.jsonl ({n['train']} conversations) and "
          f"{args.out}/heldout.jsonl ({n['heldout']} held-out questions)")
    return True


def add_eval(sub):

    p = sub.add_parser("eval", help="held-out accuracy and loss of a chat model on chat JSONL",
                       description="Ask each held-out question (the conversation without its "
                                   "last reply), greedily, and count replies that contain the "
                                   "record's \"answer\" (or the whole expected reply); also the "
                                   "mean loss on the assistant tokens.")
    add_model_flags(p, default_model="smollm2-135m-instruct")
    p.add_argument("--data", required=True, help="held-out chat JSONL")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--show", action="store_true", help="print every question and reply")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_eval)


def run_eval(args):
    from minillm.train.evaluate import evaluate_chat

    model, tok = load_for_sampling(args)
    m, rows = evaluate_chat(model, tok, args.data, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)
    if args.show:
        for q, reply, answer, ok in rows:
            print(f"{'OK ' if ok else '-- '} {q!r} -> {reply!r} (answer {answer!r})")
    print(f"held-out accuracy {100 * m['accuracy']:.1f}% ({round(m['accuracy'] * m['n'])}/"
          f"{m['n']}), assistant-token loss {m['loss']:.4f}")
