"""Checkpoints: a directory of safetensors + JSON, written atomically; never pickle.

    DIR/model.safetensors      weights (name -> array), as ``model.state_dict()``
    DIR/config.json            {"model": GPTConfig fields, ...extra, e.g. the train config}
    DIR/optimizer.safetensors  optimizer state arrays (training checkpoints only)
    DIR/state.json             step, RNG states, best val loss, ... (training checkpoints only)

Atomicity: everything is written into a fresh sibling directory (each file fsynced), which then
replaces DIR by rename; the old DIR is moved aside first and deleted only after the new one is in
place. A crash at any moment leaves either the old checkpoint or the new one, and ``load``
recovers from the moved-aside copy if the crash came between the two renames.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from minillm import backend
from minillm.errors import CheckpointError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _safetensors_bytes(arrays, metadata=None):
    from safetensors.numpy import save

    clean = {k: np.ascontiguousarray(backend.to_numpy(v)) for k, v in arrays.items()}
    return save(clean, metadata=metadata)


def write_checkpoint(directory, files):
    """Atomically make ``directory`` hold exactly ``files`` (name -> bytes)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = directory.with_name(f".{directory.name}.tmp-{tag}")
    old = directory.with_name(f".{directory.name}.old-{tag}")
    tmp.mkdir()
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # names may be "sub/file"
            _write_bytes(tmp / name, data)
        _fsync_dir(tmp)
        if directory.exists():
            os.rename(directory, old)
        os.rename(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not directory.exists():
            os.rename(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _recover(directory):
    """If a crash left DIR missing but a moved-aside DIR.old-* present, put it back."""
    directory = Path(directory)
    if directory.exists():
        return
    olds = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], directory)


def _tokenizer_files(tokenizer):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tokenizer.save(d)
        return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}


def save(directory, model, config=None, optimizer=None, state=None, tokenizer=None):
    """Save ``model`` weights (+ ``config`` dict, optimizer arrays, ``state`` dict, and the
    tokenizer's files, so that the directory alone is enough to sample from the model)."""
    files = {MODEL_FILE: _safetensors_bytes(model.state_dict(), {"format": "minillm"})}
    if tokenizer is not None:
        files.update(_tokenizer_files(tokenizer))
    cfg = dict(config or {})
    if "model" not in cfg and hasattr(model, "config"):
        cfg["model"] = model.config.to_dict()
    files[CONFIG_FILE] = json.dumps(cfg, indent=2, sort_keys=True).encode()
    if optimizer is not None:
        files[OPTIM_FILE] = _safetensors_bytes(optimizer.state_arrays())
    if state is not None:
        files[STATE_FILE] = json.dumps(state, indent=2).encode()
    write_checkpoint(directory, files)


def _read_safetensors(path):
    from safetensors.numpy import load_file

    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt ({e})") from None


def _read_json(path):
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt ({e})") from None


def load_config(directory):
    directory = Path(directory)
    _recover(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint at {directory} (expected a directory with {MODEL_FILE})")
    return _read_json(directory / CONFIG_FILE)


def load_weights(directory):
    return _read_safetensors(Path(directory) / MODEL_FILE)


def load_model(directory, device="cpu"):
    """Build a GPT from DIR/config.json and load DIR/model.safetensors into it."""
    from minillm.models import GPT, GPTConfig

    cfg = load_config(directory)
    if "model" not in cfg:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE} has no 'model' section")
    model = GPT(GPTConfig.from_dict(cfg["model"]))
    load_into(model, directory)
    if device != "cpu":
        model.to(device)
    return model, cfg


def load_into(model, directory):
    """Load DIR's weights into an existing model; a shape mismatch is a CheckpointError."""
    from minillm.errors import MinillmError

    weights = load_weights(directory)
    try:
        model.load_state_dict(weights, strict=True)
    except MinillmError as e:
        raise CheckpointError(f"checkpoint {directory} does not match this model: {e}") from None


def load_training_state(directory, optimizer):
    """Restore optimizer arrays and return the state dict (step, RNG states, ...)."""
    directory = Path(directory)
    state = _read_json(directory / STATE_FILE)
    arrays = _read_safetensors(directory / OPTIM_FILE)
    try:
        optimizer.load_state_arrays(arrays, state.get("optimizer_step", state.get("step", 0)))
    except Exception as e:  # wrong count, names or shapes of arrays
        raise CheckpointError(f"optimizer state in {directory} does not match this model ({e})") from None
    return state


def load_pretrained(path, device="cpu"):
    """(model, tokenizer) from a checkpoint directory, ready for generation (eval mode).

    ``path`` may be a checkpoint directory or a training output folder holding ``best/`` or
    ``last/`` (best is preferred). The tokenizer is read from the same directory.
    A LoRA adapter directory (with ``adapter_config.json``) loads the base checkpoint it names,
    then the adapter on top (``minillm.train.adapter``).
    """
    from minillm.tokenizers import load_tokenizer
    from minillm.train.adapter import ADAPTER_CONFIG, load_lm_with_adapter

    path = Path(path)
    _recover(path)
    if not path.exists():
        raise CheckpointError(
            f"there is no checkpoint at {path}; pass a minillm checkpoint or a Hugging Face GPT-2 "
            f"directory (where there is internet: `huggingface-cli download gpt2 --local-dir {path}`)")
    from minillm.models.hf_gpt2 import is_hf_gpt2_dir

    if is_hf_gpt2_dir(path):  # config.json says GPT-2 (minillm export or a HF download)
        from minillm.train.hf import load_hf

        return load_hf(path, device=device)
    if not (path / MODEL_FILE).exists() and not (path / ADAPTER_CONFIG).exists():
        for sub in ("best", "last"):
            if (path / sub / MODEL_FILE).exists() or (path / sub / ADAPTER_CONFIG).exists():
                path = path / sub
                break
    if (path / ADAPTER_CONFIG).exists():
        return load_lm_with_adapter(path, device=device)
    model, _ = load_model(path, device=device)
    try:
        tokenizer = load_tokenizer(path)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} has no usable tokenizer ({e})") from None
    return model.eval(), tokenizer
