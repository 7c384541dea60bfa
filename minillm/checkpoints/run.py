"""minillm's own checkpoints: a directory of safetensors + JSON, written atomically; never pickle.

    DIR/model.safetensors      weights (name -> array), as ``model.state_dict()``
    DIR/config.json            {"model": GPTConfig fields, ...extra, e.g. the train config}
    DIR/optimizer.safetensors  optimizer state arrays (training checkpoints only)
    DIR/state.json             step, RNG states, best val loss, ... (training checkpoints only)
DIR/checksums.json         {file name: sha256} of the safetensors files, verified on load
    DIR/tokenizer.json, ...    the tokenizer's files, when saved with one

A training run writes two such directories into its output folder, ``OUT/best`` (the best
validation loss so far) and ``OUT/last`` (the latest state, which ``--resume`` continues), next to
``OUT/log.jsonl``; ``resolve_checkpoint`` picks the one to load. Every directory is written with
``atomic.write_dir``, and every read first runs ``atomic.recover_dir``, so a crash between that
writer's two renames is repaired on the next read.
"""

import hashlib
import json
import math
import tempfile
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np

from minillm.checkpoints.adapter import ADAPTER_CONFIG
from minillm.checkpoints.atomic import recover_dir, remove_stale, remove_stale_files, write_dir
from minillm.checkpoints.formats import read_json, read_safetensors, safetensors_bytes, to_float32
from minillm.errors import CheckpointError, MinillmError
from minillm.models import GPT, GPTConfig

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
SUMS_FILE = "checksums.json"
# The largest model shapes a checkpoint's config.json may name (far above any model this
# framework trains; the parameter count is then checked against the weights file itself).
MODEL_LIMITS = {"vocab_size": 1 << 24, "block_size": 1 << 20, "n_layer": 1 << 10,
                "n_head": 1 << 10, "n_embd": 1 << 16}
RUN_SUBDIRS = ("best", "last")  # in the order a run folder is loaded from


def tokenizer_files(tokenizer):
    """name -> bytes of the files ``tokenizer.save`` writes (to go into a checkpoint)."""
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save(d)
        return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}


def save(directory, model, config=None, optimizer=None, state=None, tokenizer=None):
    """Save ``model`` weights (+ ``config`` dict, optimizer arrays, ``state`` dict, and the
    tokenizer's files, so that the directory alone is enough to sample from the model)."""
    files = {MODEL_FILE: safetensors_bytes(model.state_dict(), {"format": "minillm"})}
    if tokenizer is not None:
        files.update(tokenizer_files(tokenizer))
    cfg = dict(config or {})
    if "model" not in cfg and hasattr(model, "config"):
        cfg["model"] = model.config.to_dict()
    files[CONFIG_FILE] = json.dumps(cfg, indent=2, sort_keys=True).encode()
    if optimizer is not None:
        files[OPTIM_FILE] = safetensors_bytes(optimizer.state_arrays())
    if state is not None:
        files[STATE_FILE] = json.dumps(state, indent=2).encode()
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()
            if name.endswith(".safetensors")}
    files[SUMS_FILE] = json.dumps(sums, indent=2, sort_keys=True).encode()
    write_dir(directory, files)


def verify_checksums(directory, names=None):
    """Compare the sha256 of DIR's safetensors files (``names``: only these) with
    DIR/checksums.json; a mismatch (a bit flip, a truncated copy) is a CheckpointError. A
    checkpoint without the manifest (older ones) is not checked."""
    directory = Path(directory)
    if not (directory / SUMS_FILE).is_file():
        return
    sums = read_json(directory / SUMS_FILE)
    if not isinstance(sums, dict):
        raise CheckpointError(f"{directory / SUMS_FILE} is not a JSON object of file checksums")
    for name, want in sums.items():
        if names is not None and name not in names:
            continue
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{directory / SUMS_FILE} names {name!r}, not a file in that folder")
        h = hashlib.sha256()
        try:
            with open(directory / name, "rb") as f:
                while chunk := f.read(1 << 24):
                    h.update(chunk)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {directory / name} is missing") from None
        if h.hexdigest() != want:
            raise CheckpointError(
                f"{directory / name} is damaged: its sha256 does not match {SUMS_FILE} (a changed "
                f"or corrupted copy); pass --no-verify to load it anyway"
            )


def model_config(cfg, where):
    """The GPTConfig of a checkpoint's config.json (``cfg``, parsed), its types and ranges checked
    before anything is allocated: a CheckpointError naming the bad value."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{where} has no 'model' section (an object of model settings)")
    m = dict(cfg["model"])
    known = {f.name for f in dataclass_fields(GPTConfig)}
    unknown = sorted(set(m) - known)
    if unknown:
        raise CheckpointError(f"{where} has unknown model settings: {', '.join(unknown)}")
    for name, limit in MODEL_LIMITS.items():
        v = m.get(name, getattr(GPTConfig, name))
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
            raise CheckpointError(f"{where}: model.{name} must be an integer from 1 to {limit}, got {v!r}")
    for name in ("bias", "tie_word_embeddings"):
        if not isinstance(m.get(name, True), bool):
            raise CheckpointError(f"{where}: model.{name} must be true or false, got {m[name]!r}")
    for name, ok in (("dropout", lambda v: 0 <= v < 1), ("initializer_range", lambda v: v > 0)):
        v = m.get(name, getattr(GPTConfig, name))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
            raise CheckpointError(f"{where}: model.{name} is out of range, got {v!r}")
    try:
        return GPTConfig.from_dict(m)
    except MinillmError as e:
        raise CheckpointError(f"{where}: {e}") from None


def expected_parameters(c):
    """The number of parameters a GPT with config ``c`` has, computed without building it."""
    C, b = c.n_embd, int(c.bias)
    block = (2 * C * (1 + b)  # ln_1, ln_2
             + 3 * C * C + 3 * C * b + C * C + C * b  # attention: c_attn, c_proj
             + 4 * C * C + 4 * C * b + 4 * C * C + C * b)  # MLP: c_fc, c_proj
    head = 0 if c.tie_word_embeddings else c.vocab_size * C
    return c.vocab_size * C + c.block_size * C + c.n_layer * block + C * (1 + b) + head


def is_checkpoint_dir(path):
    """True for a directory holding a checkpoint: weights, or a LoRA adapter."""
    path = Path(path)
    return (path / MODEL_FILE).is_file() or (path / ADAPTER_CONFIG).is_file()


def has_training_state(path):
    """True for a checkpoint that ``--resume`` can continue exactly: weights, config, optimizer
    arrays and state.json with the step, the seed of the batch order and the random generator's
    state."""
    path = Path(path)
    if not all((path / f).is_file() for f in (MODEL_FILE, CONFIG_FILE, OPTIM_FILE, STATE_FILE)):
        return False
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(state, dict) and all(k in state for k in ("step", "batch_seed", "global_rng"))


def recover_run(out):
    """Repair a run folder after a crash: put back a moved-aside best/ or last/, then delete the
    temporary and moved-aside copies and temporary files that crashed writes left. Run only by
    the process that writes the folder (a training run, before it writes)."""
    out = Path(out)
    for sub in RUN_SUBDIRS:
        recover_dir(out / sub)
        remove_stale(out / sub)
    remove_stale_files(out)


def resume_point(out):
    """The checkpoint of run folder ``out`` that ``--resume`` continues, after ``recover_run``:
    last/ when it holds a full training state, else best/ when it does (a crash between the two
    writes of one evaluation leaves best/ newer than last/, or no last/ at all); None if neither."""
    out = Path(out)
    candidates = [out / sub for sub in ("last", "best") if has_training_state(out / sub)]
    if not candidates:
        return None

    def step(path):
        try:
            return int(json.loads((path / STATE_FILE).read_text(encoding="utf-8"))["step"])
        except (ValueError, TypeError, KeyError):
            return -1

    return max(candidates, key=step)  # last/ on a tie (max keeps the first)


def resolve_checkpoint(path):
    """The checkpoint directory ``path`` names: ``path`` itself, else the run folder's ``best/``,
    else its ``last/``; None if there is none. Recovers each candidate first."""
    path = Path(path)
    for p in (path, *(path / sub for sub in RUN_SUBDIRS)):
        recover_dir(p)
        if is_checkpoint_dir(p):
            return p
    return None


def load_config(directory):
    directory = Path(directory)
    recover_dir(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint at {directory} (expected a directory with {MODEL_FILE})")
    return read_json(directory / CONFIG_FILE)


def load_weights(directory, verify=True):
    """name -> array of DIR/model.safetensors (read lazily; BF16 widened to float32), its
    sha256 checked against DIR/checksums.json first unless ``verify`` is False."""
    if verify:
        verify_checksums(directory, names={MODEL_FILE})
    weights = read_safetensors(Path(directory) / MODEL_FILE)
    return {k: to_float32(a) if a.dtype == np.uint16 else a for k, a in weights.items()}


def load_model(directory, device="cpu", dropout=None, verify=True):
    """(GPT built from DIR/config.json with DIR/model.safetensors loaded, the config dict).
    ``dropout``: None keeps the saved model's; a number overrides it (for fine-tuning).

    Nothing in the files is trusted: the config's types and ranges are checked, and the
    parameter count it implies must equal the weights file's (its header alone) before the model
    is built, without random initialisation, and filled."""
    directory = Path(directory)
    cfg = load_config(directory)
    config = model_config(cfg, directory / CONFIG_FILE)
    header = read_safetensors(directory / MODEL_FILE)  # memory maps: nothing is read yet
    in_file = sum(int(np.prod(a.shape)) for a in header.values())
    if in_file != expected_parameters(config):
        raise CheckpointError(
            f"{directory / MODEL_FILE} holds {in_file:,} numbers but {CONFIG_FILE} describes a "
            f"model of {expected_parameters(config):,} parameters; the checkpoint is damaged"
        )
    if dropout is not None:
        config.dropout = float(dropout)
    model = GPT(config, init=False)
    load_into(model, directory, verify=verify)
    if device != "cpu":
        model.to(device)
    return model, cfg


def check_finite(weights, where):
    """Refuse weights holding NaN or infinity (a run that diverged): a CheckpointError."""
    for name, a in weights.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{where} holds non-finite weights ({name} has NaN or infinity), "
                                  f"so the training that wrote it diverged; use an earlier checkpoint")


def load_into(model, directory, verify=True):
    """Load DIR's weights into an existing model; a checksum or shape mismatch or non-finite
    weights are a CheckpointError."""
    weights = load_weights(directory, verify=verify)
    check_finite(weights, directory)
    try:
        model.load_state_dict(weights, strict=True)
    except MinillmError as e:
        raise CheckpointError(f"checkpoint {directory} does not match this model: {e}") from None


def load_training_state(directory, optimizer):
    """Restore optimizer arrays and return the state dict (step, RNG states, ...)."""
    directory = Path(directory)
    state = read_json(directory / STATE_FILE)
    arrays = read_safetensors(directory / OPTIM_FILE)
    try:
        optimizer.load_state_arrays(arrays, state.get("optimizer_step", state.get("step", 0)))
    except Exception as e:  # noqa: BLE001  (wrong count, names or shapes of arrays)
        raise CheckpointError(f"optimizer state in {directory} does not match this model ({e})") from None
    return state


def load_tokenizer(directory):
    """The tokenizer saved in DIR, or None when the checkpoint was saved without one."""
    from minillm.tokenizers import load_tokenizer as _load
    from minillm.tokenizers.base import CONFIG_NAME

    directory = Path(directory)
    if not (directory / CONFIG_NAME).exists():
        return None
    try:
        return _load(directory)
    except Exception as e:  # noqa: BLE001  (a damaged file may fail the reader in any way)
        raise CheckpointError(f"checkpoint {directory} has no usable tokenizer ({e})") from None
