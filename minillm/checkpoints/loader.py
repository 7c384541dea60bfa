"""The one loader: ``minillm.load(path_or_name)`` -> (model in eval mode, tokenizer).

What it reads, in the order it decides:

    "model.gguf"          a path ending in .gguf: minillm.checkpoints.llama.load_gguf
    "out/run"             a minillm run folder: its best/ checkpoint, else last/
    "out/run/last"        a checkpoint directory itself (model.safetensors + config.json)
    "out/lora"            a LoRA fine-tune run or adapter directory: the base it names, then the
                          adapter, merged into the weights (PEFT's layout, adapter_model.
                          safetensors: load_peft below)
    "gpt2/"               a Hugging Face GPT-2 directory (config.json with GPT2Config fields)
    "smollm2-hf/"         a Hugging Face Llama directory (config.json model_type "llama"):
                          minillm.checkpoints.hf_llama.load_hf_llama
    "smollm2"             a name without a slash that is not an existing path: a built-in model,
                          which minillm.checkpoints.builtin resolves to a local path

``base=PATH_OR_NAME`` loads an adapter (either layout) onto that base instead of the one it
names, for a run whose base has moved; the adapter's base fingerprint still has to match.

``GPT.from_pretrained`` reads through this function too (registered in minillm.models.pretrained).
"""

import os
from pathlib import Path

from minillm.checkpoints import adapter, builtin, hf_gpt2, hf_llama, peft, run
from minillm.checkpoints.atomic import check_replaceable, recover_dir
from minillm.checkpoints.llama import load_gguf
from minillm.errors import CheckpointError, ConfigError
from minillm.models import GPT, Llama, pretrained
from minillm.nn.lora import lora_layers, merge_lora

ACCEPTED = ("a minillm run or checkpoint directory, a LoRA fine-tune run, a Hugging Face GPT-2 "
            "or Llama directory, a .gguf file or a built-in model name")


def load(path_or_name, device="cpu", dropout=None, verify=True, base=None, **options):
    """(model in eval mode, tokenizer) for a run, checkpoint, adapter, HF GPT-2 directory, GGUF
    file or built-in name (see the module docstring).

    ``device``: "cpu" or "cuda". ``dropout``: None keeps the file's; a number overrides it (for
    fine-tuning; eval mode ignores it). ``verify``: check a minillm checkpoint's weights against
    its checksums.json (False skips it for huge files). ``base``: the base of a LoRA adapter, in
    place of the one it names. ``options``: passed on to the GGUF reader. The tokenizer
    is None for a minillm checkpoint saved without one (``minillm.save(model, dir)``).
    """
    if base is not None and not is_adapter(path_or_name):
        raise ConfigError(f"--base names the base of a LoRA adapter, and {path_or_name} is not "
                          f"an adapter (or a run holding one)")
    text = os.fspath(path_or_name)
    path = Path(text)
    if not path.exists() and "/" not in text and os.sep not in text:
        path = builtin.resolve(text)  # a built-in name (one sentence if it is none)
        text = str(path)
    if text.endswith(".gguf"):
        return _load_gguf(path, device=device, dropout=dropout, **options)
    if options and not hf_llama.is_hf_llama_dir(path):
        raise ConfigError(f"unknown load options {', '.join(sorted(options))} (only GGUF files "
                          f"take options besides device and dropout)")
    recover_dir(path)  # a checkpoint directory a crash left moved aside
    if not path.exists():
        raise CheckpointError(_missing(path))
    if hf_llama.is_hf_llama_dir(path):  # config.json says model_type "llama"
        return hf_llama.load_hf_llama(path, device=device, **options)
    if hf_gpt2.is_hf_gpt2_dir(path):  # config.json says GPT-2 (minillm export or a HF download)
        return hf_gpt2.load_hf(path, device=device, dropout=dropout)
    ckpt = run.resolve_checkpoint(path)
    if ckpt is None:
        raise CheckpointError(f"{path} holds no checkpoint (no {run.MODEL_FILE}, "
                              f"{adapter.ADAPTER_CONFIG}, best/ or last/); pass {ACCEPTED}")
    if peft.is_peft_dir(ckpt):  # a LoRA adapter in PEFT's layout: its base, then the adapter
        return load_peft(ckpt, device=device, base=base)
    if adapter.is_adapter_dir(ckpt):
        return _load_with_adapter(ckpt, device=device, dropout=dropout, base=base)
    cfg = run.load_config(ckpt)
    if isinstance(cfg, dict) and cfg.get("task") == "classify":
        raise CheckpointError(f"{ckpt} is a classification checkpoint; use `minillm classify`")
    model, _ = run.load_model(ckpt, device=device, dropout=dropout, verify=verify)
    return model.eval(), run.load_tokenizer(ckpt)


def is_adapter(path_or_name):
    """Whether ``path_or_name`` is a LoRA adapter directory (either layout) or a run holding
    one, so that it takes a ``base``."""
    path = Path(os.fspath(path_or_name))
    if not path.is_dir() or hf_llama.is_hf_llama_dir(path) or hf_gpt2.is_hf_gpt2_dir(path):
        return False
    ckpt = run.resolve_checkpoint(path)
    return ckpt is not None and (peft.is_peft_dir(ckpt) or adapter.is_adapter_dir(ckpt))


def _missing(path, why=""):
    where = "" if Path(path).is_absolute() else f" (looked in {Path.cwd()})"
    return (f"there is no checkpoint at {path}{where}{why}; pass {ACCEPTED} (a minillm run "
            f"folder such as out/shakespeare_char_tiny is made by `minillm pretrain` or "
            f"`make demo`; for GPT-2 where there is internet: `huggingface-cli download gpt2 "
            f"--local-dir {path}`)")


def _load_with_adapter(directory, device="cpu", dropout=None, base=None):
    """Base model and tokenizer (``base``, else the one the adapter names), then the LoRA
    adapter in ``directory``, merged for speed."""
    cfg = adapter.read_adapter_config(directory)
    if cfg.get("task", "sft") == "classify":
        raise CheckpointError(f"{directory} is a classification adapter; use `minillm classify`")
    ref = base if base is not None else adapter.resolve_base(directory, cfg)
    model, tokenizer = load(ref, device=device, dropout=dropout)
    adapter.load_adapter(model, directory)
    merge_lora(model)
    return model.eval(), tokenizer


def _load_gguf(path, device="cpu", dropout=None, **options):
    if dropout is not None:
        options["dropout"] = dropout
    return load_gguf(path, device=device, **options)


def load_peft(directory, device="cpu", base=None, merge=True):
    """(model in eval mode, tokenizer): the base the adapter names (or ``base``), loaded with the
    dtype it was trained on, plus the adapter. ``merge`` folds the update into float32 layers;
    layers over a quantized base stay unmerged (merging would dequantize them to float32)."""
    cfg = peft.read_peft_config(directory)
    own = cfg.get("minillm", {})
    ref = base or own.get("base") or cfg.get("base_model_name_or_path")
    if not ref:
        raise CheckpointError(f"adapter {directory} names no base model; pass --base "
                              f"PATH_OR_NAME")
    if base is None and _is_path(ref) and not Path(ref).exists():
        raise CheckpointError(f"adapter {directory} was trained on the base {ref}, which is not "
                              f"there any more; pass --base PATH_OR_NAME with that base's new "
                              f"place")
    options = {"dtype": own["base_dtype"]} if own.get("base_dtype") else {}
    try:
        model, tokenizer = load(ref, device=device, **options)
    except CheckpointError as e:
        raise CheckpointError(f"adapter {directory}: cannot load its base {ref}: {e}") from None
    peft.load_peft_into(model, directory, base_given=base is not None)
    if merge:
        for _, m in lora_layers(model):
            if m.quant_base is None:
                m.merge()
    return model.eval(), tokenizer


def save_pretrained(model, directory, tokenizer=None, hf_format=None):
    """``model.save_pretrained``: a GPT as a minillm checkpoint (``hf_format=True``: a Hugging
    Face GPT-2 directory), a Llama as a Hugging Face Llama directory; ``load`` reads each back.
    Refuses a ``directory`` holding other files (the write replaces it whole). Returns the
    names of the files written."""
    if isinstance(model, Llama):
        if hf_format is False:
            raise ConfigError("a Llama is saved as a Hugging Face directory; leave hf_format "
                              "unset")
        return hf_llama.export_hf_llama(model, tokenizer, directory)
    if not isinstance(model, GPT):
        raise ConfigError(f"save_pretrained writes GPT and Llama models, not "
                          f"{type(model).__name__}; use minillm.save")
    if hf_format:
        return hf_gpt2.export_hf(model, tokenizer, directory)
    tok_files = set(run.tokenizer_files(tokenizer)) if tokenizer is not None else set()
    check_replaceable(directory, {run.MODEL_FILE, run.CONFIG_FILE, run.SUMS_FILE, run.OPTIM_FILE,
                                  run.STATE_FILE, "tokenizer.json", "tokenizer.model",
                                  *tok_files})
    run.save(directory, model, tokenizer=tokenizer)
    return sorted({run.MODEL_FILE, run.CONFIG_FILE, run.SUMS_FILE, *tok_files})


def _is_path(ref):
    return "/" in ref or os.sep in ref or ref.endswith(".gguf")


pretrained.register_loader(load)
pretrained.register_saver(save_pretrained)
