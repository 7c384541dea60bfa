"""The ``minillm`` command: argument parsing and printing only; the work lives in the library.

Each subcommand has an ``add_<name>(subparsers)`` that declares its options and a ``run_<name>``
that calls the library. A user mistake (MinillmError) prints one sentence and exits with 2.

Options are spelled in either case (``--max-new-tokens`` or ``--max_new_tokens``). ``pretrain`` and
``finetune`` take their settings as config keys (``--key=value`` or ``--key value``), declared
once in minillm/train/config.py, which also gives their ``--help`` listing.
"""

import argparse
import sys
import textwrap

from minillm import __version__
from minillm.cli_chat_finetune import (
    add_chat_finetune_flags,
    add_eval,
    chat_demo_hook,
    chat_finetune_hook,
)
from minillm.cli_models import add_model_flags, load_for_sampling
from minillm.errors import MinillmError
from minillm.serve.cli import add_serve  # the server's flags live with it


def _parser():
    p = argparse.ArgumentParser(
        prog="minillm",
        description="minillm: build, fine-tune and use GPT language models on NumPy.",
    )
    p.add_argument("--version", action="version", version=f"minillm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    p.commands = sub.choices  # name -> the subcommand's parser
    return p


def _keys_epilog(cls, heading, kebab=False):
    """The config keys of ``cls`` for a command's --help (defaults: of ``--config``'s default for
    pretrain)."""
    from minillm.errors import ConfigError
    from minillm.train.config import TrainConfig, keys_help, load_config

    defaults = None
    if cls is TrainConfig:
        try:
            defaults = load_config(TrainConfig, DEFAULT_CONFIG)
        except ConfigError:
            pass
    return f"{heading}:\n{keys_help(cls, defaults, kebab=kebab)}"


# ----------------------------------------------------------------------------- prepare
def add_prepare(sub):
    p = sub.add_parser("prepare", help="corpus -> tokenizer + train.bin/val.bin token files")
    p.add_argument("--corpus", default=None,
                   help="a text file or a folder of .txt files (default: tiny Shakespeare)")
    p.add_argument("--out", "--data-dir", dest="out", default="data/shakespeare_char",
                   help="output folder (default: %(default)s)")
    p.add_argument("--tokenizer", choices=["char", "sentencepiece"], default="char")
    p.add_argument("--vocab-size", type=int, default=2048, help="sentencepiece vocabulary size")
    p.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe",
                   help="sentencepiece model type")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.set_defaults(run=run_prepare)


def run_prepare(args):
    from minillm.data import prepare

    meta = prepare(args.out, corpus=args.corpus, tokenizer=args.tokenizer,
                   vocab_size=args.vocab_size, model_type=args.model_type,
                   val_fraction=args.val_fraction)
    print(f"prepared {args.out}: vocab {meta['vocab_size']}, "
          f"{meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens ({meta['dtype']})")


# ----------------------------------------------------------------------------- pretrain
DEFAULT_CONFIG = "shakespeare_char_tiny"


def add_pretrain(sub):
    from minillm.train.config import TrainConfig, builtin_configs

    p = sub.add_parser(
        "pretrain", help="pretrain a GPT by next-token prediction", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Pretrain a GPT. Settings come from --config FILE.toml (or a built-in name: "
            f"{', '.join(builtin_configs())}), then config keys given as --key=value or "
            "--key value, e.g. --max_iters=500 --lr 3e-4 (snake_case or kebab-case). "
            "Unknown keys and wrong types are errors.", 100),
        epilog=_keys_epilog(TrainConfig, f"config keys (defaults: --config {DEFAULT_CONFIG})"),
    )
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="TOML file or built-in config name (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT_DIR/last exactly where it stopped")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress lines (in a log file)")
    p.set_defaults(run=run_pretrain, accepts_overrides=True)


def run_pretrain(args):
    from minillm.train.config import TrainConfig, load_config
    from minillm.train.pretrain import pretrain

    cfg = load_config(TrainConfig, args.config, args.overrides, also=args.options)
    pretrain(cfg, resume=args.resume, progress=not args.no_progress)


# ----------------------------------------------------------------------------- plot
def add_plot(sub):
    p = sub.add_parser("plot", help="draw the loss curve of a training run (PNG)")
    p.add_argument("run_dir", help="a training output folder (holds log.jsonl)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/loss.png)")
    p.set_defaults(run=run_plot)


def run_plot(args):
    from minillm.train.plot import plot_log  # without matplotlib: one sentence, exit 2

    print(f"wrote {plot_log(args.run_dir, args.out)}")


# ----------------------------------------------------------------------------- export
def add_export(sub):
    p = sub.add_parser(
        "export", help="write a model as a Hugging Face directory or a GGUF file",
        description="Write a model as a Hugging Face directory (--format hf: config.json + "
                    "model.safetensors + tokenizer files, loadable by transformers' "
                    "AutoModelForCausalLM; a GPT as GPT-2, a Llama as LlamaForCausalLM) or, for "
                    "a Llama model, as a GGUF file llama.cpp loads (--format gguf).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a run or checkpoint directory, a Hugging Face GPT-2 or "
                                    "Llama directory or a .gguf file")
    src.add_argument("--model", metavar="NAME",
                     help="a built-in model, fetched once: smollm2-135m-instruct")
    p.add_argument("--out", required=True,
                   help="new or empty directory (--format hf) or file (--format gguf) to write")
    p.add_argument("--format", choices=("hf", "gguf"), default="hf",
                   help="hf: a Hugging Face directory (default); gguf: a GGUF file")
    p.add_argument("--dtype", choices=("stored", "float32", "q8_0"), default=None,
                   help="GGUF weights: as the model holds them (default; quantized blocks "
                        "unchanged), float32, or q8_0")
    p.add_argument("--merge", action="store_true",
                   help="--ckpt is a LoRA adapter (or its run): write its base with the update "
                        "merged into the weights (adapted layers of a quantized base become "
                        "float32, or q8_0 with --dtype q8_0)")
    p.add_argument("--base", metavar="PATH_OR_NAME", default=None,
                   help="with --merge: the adapter's base, when it has moved")
    p.set_defaults(run=run_export)


def run_export(args):
    from pathlib import Path

    from minillm.checkpoints import load
    from minillm.checkpoints.hf_gpt2 import MINILLM_TOKENIZER_DIR, export_hf
    from minillm.checkpoints.hf_llama import export_hf_llama
    from minillm.checkpoints.llama import export_gguf
    from minillm.checkpoints.loader import is_adapter
    from minillm.models.llama import Llama
    from minillm.nn.lora import lora_layers, merge_lora
    from minillm.nn.quant import named_quant_weights

    if args.dtype and args.format != "gguf":
        raise MinillmError("--dtype chooses the weights of a GGUF file (--format gguf); a "
                           "Hugging Face export is always float32.")
    adapter = args.ckpt is not None and is_adapter(args.ckpt)
    if (args.merge or args.base) and not adapter:
        raise MinillmError(f"--merge and --base take a LoRA adapter (or a run holding one) as "
                           f"--ckpt; {args.ckpt or args.model} is none.")
    model, tokenizer = load(args.ckpt or args.model, **({"base": args.base} if args.base else {}))
    if adapter:  # a float base comes back merged; a quantized one keeps its blocks until now
        if not args.merge and any(not m.merged for _, m in lora_layers(model)):
            raise MinillmError(f"{args.ckpt} is a LoRA adapter on a quantized base: pass --merge "
                               f"to write the base with the update merged into the weights.")
        merge_lora(model)
    # parameters, counting the weights quantized layers hold (they are not Parameters)
    count = model.num_parameters() + sum(w.shape[0] * w.shape[1]
                                         for _, w in named_quant_weights(model))
    count -= sum(m.lora_A.numel() + m.lora_B.numel() for _, m in lora_layers(model))  # merged in
    if not isinstance(model, Llama):
        if args.format == "gguf":
            raise MinillmError("GGUF export is for Llama models; export this GPT with "
                               "--format hf (a Hugging Face GPT-2 directory).")
        names = export_hf(model, tokenizer, args.out)
    elif args.format == "gguf":
        if Path(args.out).is_dir():
            raise MinillmError(f"{args.out} is a directory; --format gguf writes one file "
                               f"(e.g. --out model.gguf).")
        path = export_gguf(model, tokenizer, args.out, dtype=args.dtype or "stored")
        print(f"exported {count:,} parameters to {path}")
        return
    else:
        names = export_hf_llama(model, tokenizer, args.out)
    shown = sorted({n.split("/")[0] + ("/" if "/" in n else "") for n in names})
    print(f"exported {count:,} parameters to {args.out}: {', '.join(shown)}")
    if any(n.startswith(MINILLM_TOKENIZER_DIR) for n in names):
        print(f"note: transformers loads these weights, but not the {tokenizer.kind} tokenizer "
              f"in {MINILLM_TOKENIZER_DIR}/ (minillm sample --ckpt {args.out} uses it)")


# ----------------------------------------------------------------------------- finetune
def add_finetune(sub):
    from minillm.train.config import FinetuneConfig

    p = sub.add_parser(
        "finetune", help="fine-tune a checkpoint on JSONL data (SFT or classify; LoRA or full)",
        allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Fine-tune a pretrained checkpoint. SFT data: lines {\"prompt\": ..., \"response\":"
            " ...}; classification: lines {\"text\": ..., \"label\": ...}. Settings are config "
            "keys, --key value or --key=value (kebab-case or snake_case), e.g. --base "
            "out/shakespeare_char_tiny --data demo/sft.jsonl --lr 1e-3 --batch-size 8.", 100),
        epilog=_keys_epilog(FinetuneConfig, "config keys", kebab=True),
    )
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints and log in a non-empty --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the fine-tune in --out exactly where it stopped (same options)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_chat_finetune_flags(p)  # hook: chat fine-tuning of a pretrained model
    p.set_defaults(run=run_finetune, accepts_overrides=True)


def run_finetune(args):
    from minillm.train.config import FinetuneConfig, load_config
    from minillm.train.finetune import finetune

    cfg = load_config(FinetuneConfig, None, args.overrides, also=args.options)
    vars(args).update(cfg.to_dict())  # args.base, args.lr, ... as the hooks read them

    if chat_finetune_hook(args):  # hook: --model/--ckpt/--task chat run finetune_chat
        return

    s = finetune(args.base, args.data, task=args.task, method=args.method, rank=args.rank,
                 alpha=args.alpha, lora_dropout=args.lora_dropout, targets=args.targets,
                 epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 block_size=args.block_size, out_dir=args.out, freeze_last_k=args.freeze_last_k,
                 seed=args.seed, val_fraction=args.val_fraction, val_data=args.val_data,
                 weight_decay=args.weight_decay, device=args.device, precision=args.precision,
                 overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress,
                 gradient_accumulation_steps=args.gradient_accumulation_steps,
                 gradient_checkpointing=args.grad_checkpoint)
    best = ", ".join(f"{k} {v:.4f}" for k, v in (s["best"] or {}).items())
    print(f"done: {s['steps']} steps, {s['sec_per_step'] * 1000:.1f} ms/step; best: {best}; "
          f"checkpoints in {s['out_dir']}/best and {s['out_dir']}/last")


def add_classify(sub):
    p = sub.add_parser("classify", help="label a text with a fine-tuned classifier")
    p.add_argument("--ckpt", required=True,
                   help="classifier checkpoint or adapter directory (or its run folder)")
    p.add_argument("--text", required=True, action="append", help="text to classify (repeatable)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_classify)


def run_classify(args):
    from minillm.train.finetune import classify_texts, load_classifier

    net, tok, labels = load_classifier(args.ckpt, device=args.device)
    for text, probs in zip(args.text, classify_texts(net, tok, labels, args.text)):
        top = next(iter(probs))
        print(f"{top}\t" + "  ".join(f"{k}={v:.3f}" for k, v in probs.items()) + f"\t{text!r}")


def add_finetune_demo_data(sub):
    p = sub.add_parser("finetune-demo-data",
                       help="write demo sft.jsonl and classify.jsonl from tiny Shakespeare")
    p.add_argument("--out", default="data/finetune_demo",
                   help="output folder (default: %(default)s)")
    p.add_argument("--corpus", default=None,
                   help="a text file of 'NAME:' speeches (default: tiny Shakespeare)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-sft", type=int, default=2000,
                   help="number of SFT examples (default: %(default)s)")
    p.add_argument("--task", choices=("shakespeare", "chat"), default="shakespeare",
                   help="chat: train/held-out chat JSONL of facts about a fictional product")
    p.set_defaults(run=run_finetune_demo_data)


def run_finetune_demo_data(args):
    from minillm.train.demo_data import make_demo_data

    if chat_demo_hook(args):  # hook: --task chat writes the chat demo
        return

    n = make_demo_data(args.out, corpus=args.corpus, seed=args.seed, n_sft=args.n_sft)
    print(f"wrote {args.out}/sft.jsonl ({n['sft']} examples) and "
          f"{args.out}/classify.jsonl ({n['classify']} examples)")


# ----------------------------------------------------------------------------- sample, chat
def _add_sampling_flags(p, max_new_tokens=None, default_model=None):
    from minillm.sample import MAX_NEW_TOKENS, TEMPERATURE, TOP_K  # minillm.generate's defaults

    add_model_flags(p, default_model)
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens or MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=TEMPERATURE,
                   help=f"0 = greedy (default: {TEMPERATURE})")
    p.add_argument("--top-k", type=int, default=TOP_K, help=f"0 = no limit (default: {TOP_K})")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling, in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="end the text at STR (repeatable; \\n, \\t and \\\\ are a newline, a "
                        "tab and a backslash); STR is not printed")
    p.add_argument("--seed", type=int, default=None, help="same seed -> same text")
    p.add_argument("--no-cache", action="store_true", help="re-run the context for each token")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def _sampling_options(args):
    from minillm.train.config import unescape

    stop = [unescape(s) for s in args.stop] if args.stop else None  # "\n\n" as typed in a shell
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k or None, top_p=args.top_p, greedy=args.greedy, stop=stop,
                repetition_penalty=args.repetition_penalty, use_cache=not args.no_cache)


def add_sample(sub):
    p = sub.add_parser("sample", help="generate text from a trained model",
                       description="Print --num-samples continuations of --prompt, each followed "
                                   "by a line of dashes (as nanoGPT's sample.py).")
    p.add_argument("--prompt", default="",
                   help="text to continue, or FILE:path to read it from a file; empty starts "
                        "from the begin-of-text token (default: empty)")
    p.add_argument("--num-samples", type=int, default=1)
    _add_sampling_flags(p)
    p.set_defaults(run=run_sample)


def run_sample(args):
    from pathlib import Path

    from minillm.sample import stream

    prompt = args.prompt
    if prompt.startswith("FILE:"):
        path = Path(prompt[len("FILE:"):])
        try:
            prompt = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MinillmError(f"cannot read the prompt file {path} ({e}).") from None
    if args.num_samples < 1:
        raise MinillmError(f"--num-samples must be at least 1, got {args.num_samples}.")
    model, tokenizer = load_for_sampling(args)
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i  # sample i uses seed + i
        pieces = stream(model, tokenizer, prompt, seed=seed, **_sampling_options(args))
        first = next(pieces, "")  # bad options raise here, before anything is printed
        print(prompt + first, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print("\n---------------")


def add_chat(sub):
    from minillm import cli_chat  # the chat command's own flags, session and slash commands

    p = cli_chat.add_chat(sub)
    _add_sampling_flags(p, max_new_tokens=512, default_model="smollm2-135m-instruct")
    p.set_defaults(run=lambda args: cli_chat.run_chat(args, _sampling_options(args)))


# ----------------------------------------------------------------------------- kernels
def add_kernels(sub):
    p = sub.add_parser("kernels", help="which version of each kernel runs on this machine, and why")
    p.add_argument("--mode", choices=("auto", "reference", "numba"),
                   help="as under this kernel mode (default: MINILLM_KERNELS, else auto)")
    p.set_defaults(run=run_kernels)


def run_kernels(args):
    from minillm import backend
    from minillm.kernels import registry

    if args.mode:
        backend.set_kernels(args.mode)
    print(f"kernel mode: {registry.get_mode()}")
    print(registry.format_rows(registry.describe()))


COMMANDS = [add_prepare, add_pretrain, add_plot, add_export, add_finetune, add_classify,
            add_finetune_demo_data, add_sample, add_chat, add_kernels, add_serve, add_eval]


def os_error_sentence(e):
    """One sentence for an OSError on a path: the path(s) and the system's reason."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return f"the operating system refused an operation: {reason}"
    path = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else f"{e.filename}"
    return f"cannot use {path}: {reason}"


def _silence_stdout():
    """Point standard output at /dev/null, so the interpreter's final flush into a closed pipe
    prints no second error."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _command_options(parser, argv):
    """(position of the command in ``argv``, its option strings), or (None, ())."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            sp = parser.commands.get(word)
            # argparse keeps no public list of a parser's option strings
            return (i, tuple(sp._option_string_actions)) if sp else (None, ())
    return None, ()


def _either_case(argv, start, options):
    """``argv`` with each option the command (at ``start``) knows in the other case spelled its
    way (--max_new_tokens -> --max-new-tokens, --no_progress -> --no-progress). Config keys,
    which are not argparse options, are left to minillm.train.config, which takes both."""
    if start is None:
        return argv
    out = argv[:start + 1]
    for i in range(start + 1, len(argv)):
        word = argv[i]
        if word == "--":  # the rest are values, not options
            return out + argv[i:]
        if word.startswith("--"):
            key, eq, value = word.partition("=")
            if key not in options:
                for other in (key.replace("_", "-"), "--" + key[2:].replace("-", "_")):
                    if other in options:
                        key = other
                        break
            word = key + eq + value
        out.append(word)
    return out


def _unknown_option(rest, options):
    """The one-sentence error for words the command does not take."""
    from minillm.train.config import suggest

    word = rest[0]
    if not word.startswith("-"):
        return f"unexpected argument {word!r}"
    key = word.partition("=")[0]
    return f"unknown option {key}{suggest(key, [o for o in options if o.startswith('--')])}"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    start, options = _command_options(parser, argv)
    args, rest = parser.parse_known_args(_either_case(argv, start, options))
    if args.command is None:
        parser.print_help()
        return 0
    if rest and not getattr(args, "accepts_overrides", False):
        print(f"minillm {args.command}: error: {_unknown_option(rest, options)}", file=sys.stderr)
        return 2
    args.overrides, args.options = rest, options
    try:
        args.run(args)
    except MinillmError as e:
        print(f"minillm {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except BrokenPipeError:  # standard output closed early (| head): not an error of ours
        _silence_stdout()
        return 0
    except OSError as e:  # a path the user named cannot be made, read or written
        print(f"minillm {args.command}: error: {os_error_sentence(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nminillm {args.command}: interrupted", file=sys.stderr)
        return 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away after the work was done
        _silence_stdout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
