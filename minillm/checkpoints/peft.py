"""LoRA adapters in Hugging Face PEFT's layout, so that the PEFT library can read them:

    DIR/adapter_model.safetensors   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
                                    (r, in) and ...lora_B.weight (out, r), one pair a layer
    DIR/adapter_config.json         {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r",
                                     "lora_alpha", "lora_dropout", "target_modules": ["q_proj",
                                     ...], "bias": "none", "base_model_name_or_path", ...,
                                     "minillm": {"base", "base_dtype", "base_fingerprint",
                                     "targets", "block_size"}}

PEFT names a tensor by the Hugging Face module path inside its wrapper: ``base_model.model.`` +
the transformers name (``model.layers.0...`` for a Llama body, ``lm_head`` beside it) +
``.lora_A.weight``. minillm's Llama names its modules as transformers does without the leading
``model.``, so the map is one prefix each way.

The ``minillm`` block ties the adapter to its base: ``base`` is what ``minillm.load`` takes to
rebuild it (a built-in name as given, any path made absolute, so a moved adapter still finds
it), ``base_dtype`` the ``dtype`` option it was loaded with, ``base_fingerprint`` the sha256 of
its weights (``minillm.nn.lora.base_fingerprint``; an adapter is refused on any other base).
PEFT ignores fields it does not know.
"""

import json
import os
from pathlib import Path

from minillm import backend
from minillm.checkpoints.atomic import write_dir
from minillm.checkpoints.formats import read_json, read_safetensors, safetensors_bytes
from minillm.errors import CheckpointError
from minillm.nn.lora import (
    LoRAConfig,
    apply_lora,
    base_fingerprint,
    lora_layers,
)

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."
# the Hugging Face repository of a built-in model, for base_model_name_or_path (PEFT's loader
# fetches the base by it); minillm itself reads the built-in name from the "minillm" block
HF_REPOS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def is_peft_dir(path):
    path = Path(path)
    return (path / PEFT_WEIGHTS).is_file() and (path / PEFT_CONFIG).is_file()


def peft_name(name):
    """minillm parameter name -> PEFT key: "layers.0.self_attn.q_proj.lora_A" ->
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"."""
    module, which = name.rsplit(".", 1)
    hf = module if module.startswith("lm_head") else f"model.{module}"
    return f"{PREFIX}{hf}.{which}.weight"


def minillm_name(key):
    """The inverse of ``peft_name`` (a CheckpointError for a key of another layout)."""
    if not key.startswith(PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
        raise CheckpointError(f"{key} is not a PEFT LoRA tensor name")
    hf = key[len(PREFIX): -len(".weight")]
    return hf[len("model."):] if hf.startswith("model.") else hf


def base_reference(base):
    """What the adapter stores to find its base again: a built-in name as is, a path absolute."""
    text = os.fspath(base)
    if not Path(text).exists() and "/" not in text and os.sep not in text:
        return text
    return str(Path(text).resolve())


def save_peft(directory, model, lora_config, base, base_dtype=None, extra=None):
    """Write ``model``'s LoRA tensors and a PEFT adapter_config.json to ``directory`` (atomic).
    ``base``: the name or path the base was loaded from; ``base_dtype``: its load option."""
    cfg = lora_config if isinstance(lora_config, LoRAConfig) else LoRAConfig(**lora_config)
    layers = lora_layers(model)
    if not layers:
        raise CheckpointError("the model has no LoRA layers to save; call apply_lora first")
    tensors = {}
    for name, m in layers:
        tensors[peft_name(f"{name}.lora_A")] = backend.to_numpy(m.lora_A.data)
        tensors[peft_name(f"{name}.lora_B")] = backend.to_numpy(m.lora_B.data)
    modules = sorted({n.rsplit(".", 1)[-1] for n, _ in layers})
    lora_names = {f"{n}.{w}" for n, _ in layers for w in ("lora_A", "lora_B")}
    ref = base_reference(base)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": HF_REPOS.get(ref, ref),
        "minillm": {
            "base": ref,
            "base_dtype": base_dtype,
            "base_fingerprint": base_fingerprint(model, exclude=lora_names),
            "targets": list(cfg.targets),
            "block_size": int(model.config.block_size),
            **(extra or {}),
        },
    }
    write_dir(directory, {
        PEFT_WEIGHTS: safetensors_bytes(tensors, {"format": "pt"}),
        PEFT_CONFIG: json.dumps(config, indent=2, sort_keys=True).encode(),
    })


def read_peft_config(directory):
    cfg = read_json(Path(directory) / PEFT_CONFIG)
    if cfg.get("peft_type") != "LORA":
        raise CheckpointError(f"{directory} holds a PEFT {cfg.get('peft_type')!r} adapter; "
                              "minillm reads LORA adapters")
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in cfg]
    if missing:
        raise CheckpointError(f"{directory / PEFT_CONFIG} lacks {', '.join(missing)}")
    return cfg


def load_peft_into(model, directory, base_given=False):
    """Apply the PEFT adapter in ``directory`` to ``model`` (its base, loaded) and load its
    tensors; checks names, shapes and (when recorded) the base fingerprint. ``base_given``: the
    base came from the user (--base), which the message on a wrong base then names. Returns the
    config."""
    directory = Path(directory)
    cfg = read_peft_config(directory)
    own = cfg.get("minillm", {})
    targets = own.get("targets") or [t for t in cfg["target_modules"]]
    if not lora_layers(model):
        apply_lora(model, cfg["r"], cfg["lora_alpha"], 0.0, targets)
    params = dict(model.named_parameters())
    tensors = {minillm_name(k): v for k, v in read_safetensors(directory / PEFT_WEIGHTS).items()}
    for name, arr in tensors.items():
        if name not in params:
            raise CheckpointError(f"adapter {directory} does not match this model: it has "
                                  f"{name}, the model does not")
        if tuple(arr.shape) != tuple(params[name].shape):
            raise CheckpointError(f"adapter {directory} does not match this model: {name} is "
                                  f"{tuple(arr.shape)} in the adapter but "
                                  f"{tuple(params[name].shape)} in the model")
    lacking = [n for n in params if n.endswith((".lora_A", ".lora_B")) and n not in tensors]
    if lacking:
        raise CheckpointError(f"adapter {directory} does not match this model: it lacks "
                              f"{lacking[0]}")
    fp = own.get("base_fingerprint")
    if fp and base_fingerprint(model, exclude=set(tensors)) != fp:
        given = "those of the base passed with --base" if base_given else "this model's"
        raise CheckpointError(f"adapter {directory} was trained on other base weights than "
                              f"{given} (its base: {own.get('base')}, fingerprint {fp[:12]})")
    for name, arr in tensors.items():
        p = params[name]
        p.data = backend.to_device(arr.astype(p.dtype, copy=True), backend.device_of(p.data))
    return cfg
