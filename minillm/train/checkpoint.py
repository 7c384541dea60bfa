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


def save(directory, model, config=None, optimizer=None, state=None):
    """Save ``model`` weights (+ ``config`` dict, optimizer arrays and ``state`` dict)."""
    files = {MODEL_FILE: _safetensors_bytes(model.state_dict(), {"format": "minillm"})}
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
    except (IndexError, ValueError, Exception) as e:
        raise CheckpointError(f"optimizer state in {directory} does not match this model ({e})") from None
    return state
