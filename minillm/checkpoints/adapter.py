"""LoRA adapters on disk: a directory next to (not inside) the base checkpoint it adapts.

    DIR/adapter.safetensors    the LoRA A/B tensors (+ any other trained tensor, e.g. a head)
    DIR/adapter_config.json    {"rank", "alpha", "dropout", "targets", "base": path of the base
                                checkpoint, "base_fingerprint": sha256 of the base weights,
                                "block_size", "task", ...extra}

The fingerprint (``minillm.nn.lora.base_fingerprint``: names, shapes and float32 bytes of every
base parameter) is what ties an adapter to its base: an adapter loaded onto any other model, even
one with the same shapes, is refused with an error that says so. Written atomically like every
checkpoint (``atomic.write_dir``). ``minillm.load`` on an adapter directory (or its run folder)
loads the base, then the adapter, and merges it.
"""

import json
from pathlib import Path

from minillm import backend
from minillm.checkpoints.atomic import recover_dir, write_dir
from minillm.checkpoints.formats import read_json, read_safetensors, safetensors_bytes
from minillm.errors import CheckpointError, ConfigError
from minillm.nn.lora import (
    LoRAConfig,
    apply_lora,
    base_fingerprint,
    lora_layers,
    lora_state_dict,
    unmerge_lora,
)

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path):
    return (Path(path) / ADAPTER_CONFIG).is_file()


def save_adapter(directory, model, lora_config, base_path, extra=None, extra_files=None):
    """Write ``model``'s adapter tensors and config to ``directory`` (atomic).

    ``lora_config``: a LoRAConfig (or its dict); ``base_path``: the base checkpoint directory
    (stored absolute, so the adapter can be loaded from anywhere); ``extra``: more JSON fields
    (the task, the label list, ...); ``extra_files``: name -> bytes written into the same
    directory in the same atomic write (a training state, for an exact resume).
    """
    cfg = lora_config.to_dict() if isinstance(lora_config, LoRAConfig) else dict(lora_config)
    tensors = lora_state_dict(model)
    if not tensors:
        raise ConfigError("the model has no LoRA layers to save; call apply_lora first")
    body = getattr(model, "gpt", model)  # a GPTClassifier adapts its GPT body
    cfg.update(
        base=str(Path(base_path).resolve()),
        base_fingerprint=base_fingerprint(model, exclude=set(tensors)),
        block_size=int(body.config.block_size),
        format="minillm-lora",
        **(extra or {}),
    )
    files = {
        ADAPTER_FILE: safetensors_bytes(tensors, {"format": "minillm-lora"}),
        ADAPTER_CONFIG: json.dumps(cfg, indent=2, sort_keys=True).encode(),
        **(extra_files or {}),
    }
    write_dir(directory, files)


def read_adapter_config(directory):
    directory = Path(directory)
    recover_dir(directory)
    cfg = read_json(directory / ADAPTER_CONFIG)
    missing = [k for k in ("rank", "alpha", "targets", "base", "base_fingerprint") if k not in cfg]
    if missing:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG} lacks {', '.join(missing)}")
    return cfg


def load_adapter(model, directory):
    """Load the adapter in ``directory`` into ``model`` (the base model, built and loaded).

    Applies LoRA with the adapter's rank/alpha/targets first if the model has no LoRA layers;
    crops the context to the adapter's block_size if it was trained on a shorter one. Raises
    CheckpointError when a tensor is missing or has another shape (naming it) or when the base
    weights are not the ones the adapter was trained on (fingerprint). Returns the config dict.
    """
    directory = Path(directory)
    cfg = read_adapter_config(directory)
    body = getattr(model, "gpt", model)
    bs = int(cfg.get("block_size", body.config.block_size))
    if bs < body.config.block_size:
        body.crop_block_size(bs)
    if not lora_layers(model):
        apply_lora(model, cfg["rank"], cfg["alpha"], cfg.get("dropout", 0.0), cfg["targets"])
    unmerge_lora(model)  # new A, B must not land on top of an old merged update
    tensors = read_safetensors(directory / ADAPTER_FILE)
    own = dict(model.named_parameters())
    for name, arr in tensors.items():
        if name not in own:
            raise CheckpointError(
                f"adapter {directory} does not match this model: "
                f"it has tensor {name}, the model does not"
            )
        if tuple(arr.shape) != tuple(own[name].shape):
            raise CheckpointError(
                f"adapter {directory} does not match this model: {name} is "
                f"{tuple(arr.shape)} in the adapter but {tuple(own[name].shape)} in the model"
            )
    lora_missing = [n for n in own if n.endswith((".lora_A", ".lora_B")) and n not in tensors]
    if lora_missing:
        raise CheckpointError(
            f"adapter {directory} does not match this model: it lacks {lora_missing[0]}"
        )
    fp = base_fingerprint(model, exclude=set(tensors))
    if fp != cfg["base_fingerprint"]:
        raise CheckpointError(
            f"adapter {directory} was trained on other base weights than this model's "
            f"(fingerprint {fp[:12]} vs {cfg['base_fingerprint'][:12]}; base was {cfg['base']})"
        )
    for name, arr in tensors.items():
        p = own[name]
        data = arr.astype(p.dtype, copy=True)
        p.data = backend.to_device(data, backend.device_of(p.data))
    return cfg


def resolve_base(directory, cfg):
    """The base checkpoint path an adapter names (absolute, as save_adapter writes it, or
    relative to the adapter). The file is data from elsewhere: the base must be a checkpoint
    directory named without ``..`` (never a built-in name or a file), and the loaded weights
    must then match the adapter's base fingerprint."""
    raw = cfg["base"]
    if not isinstance(raw, str) or not raw or ".." in Path(raw).parts:
        raise CheckpointError(f"adapter {directory} names base {raw!r}, which is not a plain path "
                              f"to a checkpoint directory ('..' is not followed)")
    base = Path(raw)
    if not base.is_absolute():
        base = Path(directory) / base
    if base.exists() and not base.is_dir():
        raise CheckpointError(f"adapter {directory} names base {base}, which is not a checkpoint directory")
    if not base.exists():
        raise CheckpointError(
            f"adapter {directory} names base checkpoint {base}, which does not exist; pass "
            f"--base PATH with that base's new place"
        )
    return base

