"""The model flags every command that loads a model shares (--ckpt | --model, --dtype, --base,
--no-verify), and the load they lead to; used by minillm.cli and its chat fine-tuning part."""

from minillm.errors import MinillmError


def add_model_flags(p, default_model=None):
    """--ckpt PATH | --model NAME, and --dtype for GGUF weights."""
    src = p.add_mutually_exclusive_group(required=default_model is None)
    src.add_argument("--ckpt", help="a run or checkpoint directory, a LoRA run, a Hugging Face "
                                    "GPT-2 directory or a .gguf file")
    src.add_argument("--model", metavar="NAME",
                     help="a built-in model, fetched once: smollm2-135m-instruct"
                          + (f" (default: {default_model})" if default_model else ""))
    p.add_argument("--dtype", choices=("stored", "float32", "q8_0"), default=None,
                   help="GGUF weights in memory: as the file stores them (default), float32, "
                        "or requantized to q8_0")
    add_activations_flag(p)
    p.add_argument("--base", metavar="PATH_OR_NAME", default=None,
                   help="with --ckpt LORA_RUN: the adapter's base model (a path or a built-in "
                        "name), for a run whose base has moved; it must be the base the adapter "
                        "was trained on (checked by fingerprint)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of a minillm checkpoint's weights (huge files)")
    p.set_defaults(default_model=default_model)


def add_activations_flag(p):
    p.add_argument("--activations", choices=("float32", "q8_0"), default="float32",
                   help="what quantized layers do with their inputs: keep them float32 "
                        "(default), or round them to q8_0 blocks first as llama.cpp does "
                        "(faster on CPUs with AVX-512 VNNI; greedy text can differ)")


def apply_activations(model, activations):
    """--activations on a loaded model: one sentence where q8_0 has nothing to act on."""
    from minillm.nn.quant import set_activations

    if set_activations(model, activations) == 0 and activations != "float32":
        raise MinillmError(f"--activations {activations} acts on quantized weights (GGUF "
                           f"Q8_0, Q4_0 or Q4_1 kept in blocks, or --dtype q8_0), and this "
                           f"model holds none.")


def model_source(args):
    """What --ckpt / --model (or the command's default model) names."""
    return args.ckpt or args.model or args.default_model


def load_for_sampling(args):
    """(model, tokenizer) from --ckpt or --model; a checkpoint without a tokenizer cannot be
    sampled."""
    from minillm.checkpoints import load

    source = model_source(args)
    options = {"dtype": args.dtype} if args.dtype else {}
    if getattr(args, "base", None):
        options["base"] = args.base
    model, tokenizer = load(source, device=args.device, verify=not args.no_verify, **options)
    if tokenizer is None:
        raise MinillmError(f"{source} holds no tokenizer, so its text cannot be encoded; save "
                           f"the checkpoint with its tokenizer.")
    apply_activations(model, getattr(args, "activations", "float32"))
    return model, tokenizer
