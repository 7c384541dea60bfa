"""Hugging Face GPT-2 directories as checkpoints: load one as (model, tokenizer), export to one.

    model, tok = load_hf("gpt2")              # config.json + model.safetensors + vocab/merges
    export_hf(model, tok, "out/hf")           # the same layout, loadable by transformers:
                                              # GPT2LMHeadModel.from_pretrained("out/hf")

The weight conversion lives in minillm.models.hf_gpt2; this module adds the tokenizer and the
files. An export is written atomically with ``checkpoint.write_checkpoint`` and contains

    config.json, model.safetensors          always (float32, HF names, Conv1D layout)
    vocab.json, merges.txt,                 when the tokenizer is GPT-2 byte-level BPE: the files
      tokenizer_config.json                 transformers' GPT2Tokenizer reads
    minillm_tokenizer/                      for any other minillm tokenizer (char, SentencePiece):
                                            its own files, which transformers cannot read. A
                                            subfolder, because HF reads a top-level
                                            tokenizer.json as its own (different) format.
"""

import json
import tempfile
from pathlib import Path

from minillm.errors import CheckpointError
from minillm.models import hf_gpt2
from minillm.train.checkpoint import write_checkpoint

MINILLM_TOKENIZER_DIR = "minillm_tokenizer"
GPT2_TOKENIZER_FILES = ("vocab.json", "merges.txt")
_EXPORT_NAMES = {hf_gpt2.CONFIG_FILE, hf_gpt2.WEIGHTS_FILE, "tokenizer_config.json",
                 MINILLM_TOKENIZER_DIR, *GPT2_TOKENIZER_FILES}


def load_hf(path, device="cpu", dropout=None):
    """(model in eval mode, tokenizer) from a Hugging Face GPT-2 directory or a minillm export."""
    from minillm.tokenizers import GPT2Tokenizer, load_tokenizer

    path = Path(path)
    model = hf_gpt2.from_pretrained(path, dropout=dropout)
    if any((path / f).exists() for f in GPT2_TOKENIZER_FILES):
        missing = [f for f in GPT2_TOKENIZER_FILES if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"the GPT-2 directory {path} has no {missing[0]}; "
                                  f"{hf_gpt2.how_to_get(path, model.config.n_layer)}.")
        tokenizer = GPT2Tokenizer.from_directory(path)
    elif (path / MINILLM_TOKENIZER_DIR).is_dir():
        tokenizer = load_tokenizer(path / MINILLM_TOKENIZER_DIR)
    else:
        raise CheckpointError(f"the GPT-2 directory {path} has no vocab.json or merges.txt; "
                              f"{hf_gpt2.how_to_get(path, model.config.n_layer)}.")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"the tokenizer in {path} has {tokenizer.vocab_size} tokens but the model "
                              f"only {model.config.vocab_size} embeddings.")
    if device != "cpu":
        model.to(device)
    return model, tokenizer


def _check_out_dir(out):
    """export replaces the whole directory: refuse one that holds anything but an earlier export,
    so that a typo in --out cannot delete the user's files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory; choose a new or empty --out.")
    others = sorted(p.name for p in out.iterdir() if p.name not in _EXPORT_NAMES)
    if others:
        raise CheckpointError(f"{out} already holds {others[0]}, which an export would delete; "
                              "choose a new or empty directory.")


def _hf_tokenizer_config(n_positions):
    eot = "<|endoftext|>"
    return {"tokenizer_class": "GPT2Tokenizer", "model_max_length": n_positions,
            "bos_token": eot, "eos_token": eot, "unk_token": eot, "add_prefix_space": False}


def export_hf(model, tokenizer, out_dir):
    """Write ``model`` (+ ``tokenizer``) as a Hugging Face GPT-2 directory; return its file names.

    ``model`` is a minillm GPT (biases or not: a bias=False model is exported with zero biases,
    the same function). ``tokenizer`` may be None (weights only); bos/eos ids then default to
    the last vocabulary id, as in GPT-2.
    """
    out = Path(out_dir)
    _check_out_dir(out)
    c = model.config
    eos = getattr(tokenizer, "eos_id", c.vocab_size - 1)
    bos = getattr(tokenizer, "bos_id", eos)
    config = hf_gpt2.hf_config_from_gpt(c, bos_token_id=bos, eos_token_id=eos)
    from safetensors.numpy import save

    files = {
        hf_gpt2.CONFIG_FILE: (json.dumps(config, indent=2) + "\n").encode(),
        # "format": "pt" is what transformers checks for in a safetensors archive's metadata
        hf_gpt2.WEIGHTS_FILE: save(hf_gpt2.hf_state_dict(model), metadata={"format": "pt"}),
    }
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as d:
            tokenizer.save(d)
            saved = {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}
        if getattr(tokenizer, "kind", None) == "gpt2":
            # only HF's files; minillm's tokenizer.json would be misread by transformers
            files.update({f: saved[f] for f in GPT2_TOKENIZER_FILES})
            tok_cfg = _hf_tokenizer_config(c.block_size)
            files["tokenizer_config.json"] = (json.dumps(tok_cfg, indent=2) + "\n").encode()
        else:
            files.update({f"{MINILLM_TOKENIZER_DIR}/{name}": b for name, b in saved.items()})
    write_checkpoint(out, files)
    return sorted(files)

