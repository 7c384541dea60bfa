"""Hugging Face GPT-2 directories <-> minillm's GPT (gpt2, gpt2-medium, gpt2-large, gpt2-xl).

    model, tok = load_hf("gpt2")              # config.json + model.safetensors + vocab/merges
    export_hf(model, tok, "out/hf")           # the same layout, loadable by transformers:
                                              # GPT2LMHeadModel.from_pretrained("out/hf")

A Hugging Face GPT-2 directory (``huggingface-cli download gpt2 --local-dir gpt2``) holds

    config.json              GPT2Config: n_embd, n_layer, n_head, n_positions, vocab_size, ...
    model.safetensors        the weights (or model-0000k-of-0000n.safetensors + an index.json)
    vocab.json, merges.txt   the byte-level BPE tokenizer (read by minillm.tokenizers.gpt2)

The four sizes differ only in config.json, so one reader serves them all. The architecture is
minillm's GPT exactly; only the spelling of the weights differs:

1. Names. ``GPT2LMHeadModel.save_pretrained`` prefixes ``transformer.`` (the files in the
   official hub repos do not); the causal mask is stored as the buffers ``h.N.attn.bias`` and
   ``h.N.attn.masked_bias`` (constants, not weights: dropped); ``lm_head.weight``, when present
   in a tied model (``tie_word_embeddings``, GPT-2's default), is a copy of ``wte.weight`` and
   must equal it; an untied model (``tie_word_embeddings: false``) has its own.
2. Layout. OpenAI wrote the projections as "Conv1D" layers with weight (in, out) and
   y = x W + b; minillm's Linear stores (out, in) and computes y = x W^T + b, as torch.nn.Linear.
   So c_attn, attn.c_proj, c_fc and mlp.c_proj weights are transposed, nothing else. c_attn's 3C
   output columns are q | k | v, each H heads of D contiguous columns: the (3, H, D) order that
   minillm's attention reshapes to, so no rows move.

Weights are read lazily (``formats.read_safetensors``: header + np.memmap), so that a tensor is
only read when converted: gpt2-xl's 6 GB file never sits in memory twice, the mask buffers are
never read, and float16 / bfloat16 files (NumPy has no bfloat16) load as float32.

An export is written atomically (``atomic.write_dir``) and contains

    config.json, model.safetensors          always (float32, HF names, Conv1D layout)
    vocab.json, merges.txt,                 when the tokenizer is GPT-2 byte-level BPE: the files
      tokenizer_config.json                 transformers' GPT2Tokenizer reads
    minillm_tokenizer/                      for any other minillm tokenizer (char, SentencePiece):
                                            its own files, which transformers cannot read. A
                                            subfolder, because HF reads a top-level
                                            tokenizer.json as its own (different) format.
"""

import json
import re
from pathlib import Path

import numpy as np

from minillm import backend
from minillm.checkpoints.atomic import check_replaceable, write_dir
from minillm.checkpoints.formats import read_json, read_safetensors, safetensors_bytes, to_float32
from minillm.checkpoints.run import tokenizer_files
from minillm.errors import CheckpointError
from minillm.models.gpt import GPT, GPTConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # sharded checkpoints (save_pretrained > 5 GB)
LAYER_NORM_EPS = 1e-5  # minillm's LayerNorm eps, and GPT-2's layer_norm_epsilon
# The tanh approximation of GELU, which minillm's gelu kernels compute. HF's plain "gelu" is
# the exact erf form: a different function, refused rather than silently approximated.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")  # not h.N.attn.c_attn.bias
_HUB_NAME = {12: "gpt2", 24: "gpt2-medium", 36: "gpt2-large", 48: "gpt2-xl"}  # by n_layer
MINILLM_TOKENIZER_DIR = "minillm_tokenizer"
GPT2_TOKENIZER_FILES = ("vocab.json", "merges.txt")
_EXPORT_NAMES = {CONFIG_FILE, WEIGHTS_FILE, "tokenizer_config.json", MINILLM_TOKENIZER_DIR,
                 *GPT2_TOKENIZER_FILES}


def how_to_get(path, n_layer=12):
    """The end of every 'missing file' sentence: how to obtain a complete directory."""
    name = _HUB_NAME.get(n_layer, "gpt2")
    return (f"download the whole directory where there is internet (`huggingface-cli download "
            f"{name} --local-dir {path}` or `git clone https://huggingface.co/{name}`) and copy "
            f"it here")


def is_hf_gpt2_dir(path):
    """True if ``path`` has a Hugging Face GPT-2 config.json (not a minillm checkpoint's)."""
    try:
        cfg = read_json(Path(path) / CONFIG_FILE)
    except CheckpointError:
        return False
    return isinstance(cfg, dict) and "model" not in cfg and (
        cfg.get("model_type") == "gpt2" or "n_positions" in cfg)


# ----------------------------------------------------------------------------- config
def read_hf_config(path):
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"there is no GPT-2 directory at {path}; {how_to_get(path)}.")
    f = path / CONFIG_FILE
    if not f.is_file():
        raise CheckpointError(f"the GPT-2 directory {path} has no {CONFIG_FILE}; {how_to_get(path)}.")
    cfg = read_json(f, hint=how_to_get(path))
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{f} is not a GPT-2 config (a JSON object is expected).")
    return cfg


def gpt_config_from_hf(cfg, where="config.json", dropout=None):
    """GPTConfig for a HF GPT2Config dict; anything minillm's GPT does not compute is an error.

    ``dropout``: None takes the config's resid_pdrop (0.1 for GPT-2, used when fine-tuning;
    eval mode ignores it); a number overrides it.
    """
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{where} describes a {cfg['model_type']!r} model; only GPT-2 is supported.")
    missing = [k for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size") if k not in cfg]
    if missing:
        raise CheckpointError(f"{where} has no {', '.join(missing)}; it is not a GPT-2 config.")
    act = cfg.get("activation_function", "gelu_new")
    if act not in TANH_GELUS:
        raise CheckpointError(f"{where} uses activation_function {act!r}, but minillm's GPT computes "
                              f"the tanh GELU ({' / '.join(TANH_GELUS)}).")
    eps = float(cfg.get("layer_norm_epsilon", LAYER_NORM_EPS))
    if abs(eps - LAYER_NORM_EPS) > 1e-12:
        raise CheckpointError(f"{where} has layer_norm_epsilon={eps:g}, but minillm's LayerNorm uses "
                              f"{LAYER_NORM_EPS:g} (as every GPT-2 does).")
    n_embd = int(cfg["n_embd"])
    unsupported = {  # key: (value minillm computes, what the config says)
        "n_inner": (4 * n_embd, cfg.get("n_inner") or 4 * n_embd),
        "scale_attn_weights": (True, cfg.get("scale_attn_weights", True)),
        "scale_attn_by_inverse_layer_idx": (False, cfg.get("scale_attn_by_inverse_layer_idx", False)),
        "add_cross_attention": (False, cfg.get("add_cross_attention", False)),
    }
    for key, (ours, theirs) in unsupported.items():
        if ours != theirs:
            raise CheckpointError(f"{where} sets {key}={theirs!r}; minillm's GPT supports only {ours!r}.")
    p = cfg.get("resid_pdrop", 0.1) if dropout is None else dropout
    return GPTConfig(vocab_size=int(cfg["vocab_size"]), block_size=int(cfg["n_positions"]),
                     n_layer=int(cfg["n_layer"]), n_head=int(cfg["n_head"]), n_embd=n_embd,
                     dropout=float(p), bias=True,
                     tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                     initializer_range=float(cfg.get("initializer_range", 0.02)))


def hf_config_from_gpt(c, bos_token_id, eos_token_id):
    """The GPT2Config dict (transformers' field names) for a minillm GPTConfig."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,  # legacy alias of n_positions, still read by old code
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # = 4 * n_embd
        "activation_function": "gelu_new",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": c.initializer_range,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": int(bos_token_id),
        "eos_token_id": int(eos_token_id),
        "tie_word_embeddings": bool(c.tie_word_embeddings),
    }


# ----------------------------------------------------------------------------- names and shapes
def hf_shapes(c):
    """HF name (no prefix) -> shape in HF's layout, for every weight a GPT2LMHeadModel has."""
    C, V, P = c.n_embd, c.vocab_size, c.block_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (P, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)  # nn.Linear (out, in): stored as minillm stores it
    for i in range(c.n_layer):
        b = f"h.{i}."
        shapes.update({
            b + "ln_1.weight": (C,), b + "ln_1.bias": (C,),
            b + "attn.c_attn.weight": (C, 3 * C), b + "attn.c_attn.bias": (3 * C,),  # Conv1D (in, out)
            b + "attn.c_proj.weight": (C, C), b + "attn.c_proj.bias": (C,),
            b + "ln_2.weight": (C,), b + "ln_2.bias": (C,),
            b + "mlp.c_fc.weight": (C, 4 * C), b + "mlp.c_fc.bias": (4 * C,),
            b + "mlp.c_proj.weight": (4 * C, C), b + "mlp.c_proj.bias": (C,),
        })
    return shapes


def _check_tensors(tensors, config, where):
    """HF name -> array (prefix stripped, buffers and a tied lm_head dropped), checked against
    the shapes the config implies. Raises CheckpointError naming the first problem."""
    expected = hf_shapes(config)
    out, lm_head = {}, None
    for name, a in tensors.items():
        short = name.removeprefix("transformer.")
        if _MASK_BUFFER.match(short):
            continue
        if short == "lm_head.weight" and config.tie_word_embeddings:
            lm_head = a
            continue
        if short not in expected:
            raise CheckpointError(f"{where} has a tensor {name} that GPT-2 does not have.")
        out[short] = a
    missing = [k for k in expected if k not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{where} lacks the tensor {missing[0]}{more}; the download is incomplete.")
    for short, shape in expected.items():  # in model order, so wte (vocab, width) comes first
        if tuple(out[short].shape) != shape:
            raise CheckpointError(f"tensor {short} in {where} has shape {tuple(out[short].shape)}, but "
                                  f"the config needs {shape}.")
    if lm_head is not None and not np.array_equal(to_float32(lm_head), to_float32(out["wte.weight"])):
        raise CheckpointError(f"{where} has an lm_head.weight that differs from wte.weight, but its "
                              "config ties the two (tie_word_embeddings is true).")
    return out


def _copy_checked(model, hf):
    for name, p in model.named_parameters():
        a = to_float32(hf[name])
        if name.endswith(CONV1D):
            a = np.ascontiguousarray(a.T)  # (in, out) -> (out, in)
        p.data = a.astype(p.data.dtype, copy=False)


def hf_state_dict(model):
    """HF name (``transformer.`` prefix, as save_pretrained writes) -> float32 C-contiguous
    array in Conv1D layout. A model built with bias=False gets zero biases, which computes the
    same function (HF's GPT-2 always has biases). A tied lm_head is not stored; an untied one is
    ``lm_head.weight`` (no prefix, as GPT2LMHeadModel names it)."""
    own = {n: backend.to_numpy(p.data) for n, p in model.named_parameters()}
    out = {}
    for name, shape in hf_shapes(model.config).items():
        a = own.get(name)
        if a is None:  # a bias of a bias=False model
            a = np.zeros(shape, dtype=np.float32)
        elif name.endswith(CONV1D):
            a = a.T  # (out, in) -> (in, out)
        prefix = "" if name == "lm_head.weight" else "transformer."
        out[prefix + name] = np.ascontiguousarray(a, dtype=np.float32)
    return out


# ----------------------------------------------------------------------------- files
def read_hf_weights(path, n_layer=12):
    """All tensors of a HF directory: model.safetensors, or the shards its index.json lists."""
    path = Path(path)
    if (path / WEIGHTS_FILE).is_file():
        return read_safetensors(path / WEIGHTS_FILE)
    if (path / INDEX_FILE).is_file():
        index = read_json(path / INDEX_FILE)
        try:
            shards = sorted(set(index["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path / INDEX_FILE} is corrupt (no weight_map: {e}).") from None
        tensors = {}
        for shard in shards:
            if not (path / shard).is_file():
                raise CheckpointError(f"the GPT-2 directory {path} has no {shard} (listed in {INDEX_FILE}); "
                                      f"{how_to_get(path, n_layer)}.")
            tensors.update(read_safetensors(path / shard))
        return tensors
    also = " (minillm never unpickles, so pytorch_model.bin is not read)" \
        if (path / "pytorch_model.bin").exists() else ""
    raise CheckpointError(f"the GPT-2 directory {path} has no {WEIGHTS_FILE}{also}; "
                          f"{how_to_get(path, n_layer)}.")


class _Uninitialised(GPT):
    """A GPT that skips GPT-2 initialisation: every weight is overwritten right away, and drawing
    1.5 B normal numbers for gpt2-xl would take about a minute."""

    def _init_weights(self):
        pass


def load_hf_model(path, dropout=None):
    """A minillm GPT (eval mode) with the weights of the Hugging Face GPT-2 directory ``path``.

    The global RNG is left as it was (building the layers draws initial weights, which are then
    overwritten), so loading a model does not change what a seeded run does next.
    """
    path = Path(path)
    cfg = read_hf_config(path)
    config = gpt_config_from_hf(cfg, where=str(path / CONFIG_FILE), dropout=dropout)
    tensors = read_hf_weights(path, config.n_layer)
    hf = _check_tensors(tensors, config, str(path))  # fail before the (large) model is built
    state = backend.get_rng_state()
    try:
        model = _Uninitialised(config)
    finally:
        backend.set_rng_state(state)
    model.__class__ = GPT  # a plain GPT from here on
    _copy_checked(model, hf)
    return model.eval()


# ----------------------------------------------------------------------------- model + tokenizer
def load_hf(path, device="cpu", dropout=None):
    """(model in eval mode, tokenizer) from a Hugging Face GPT-2 directory or a minillm export."""
    from minillm.tokenizers import GPT2Tokenizer, load_tokenizer

    path = Path(path)
    model = load_hf_model(path, dropout=dropout)
    if any((path / f).exists() for f in GPT2_TOKENIZER_FILES):
        missing = [f for f in GPT2_TOKENIZER_FILES if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"the GPT-2 directory {path} has no {missing[0]}; "
                                  f"{how_to_get(path, model.config.n_layer)}.")
        tokenizer = GPT2Tokenizer.from_directory(path)
    elif (path / MINILLM_TOKENIZER_DIR).is_dir():
        tokenizer = load_tokenizer(path / MINILLM_TOKENIZER_DIR)
    else:
        raise CheckpointError(f"the GPT-2 directory {path} has no vocab.json or merges.txt; "
                              f"{how_to_get(path, model.config.n_layer)}.")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"the tokenizer in {path} has {tokenizer.vocab_size} tokens but the model "
                              f"only {model.config.vocab_size} embeddings.")
    if device != "cpu":
        model.to(device)
    return model, tokenizer


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
    check_replaceable(out, _EXPORT_NAMES)
    c = model.config
    eos = getattr(tokenizer, "eos_id", c.vocab_size - 1)
    bos = getattr(tokenizer, "bos_id", eos)
    config = hf_config_from_gpt(c, bos_token_id=bos, eos_token_id=eos)
    files = {
        CONFIG_FILE: (json.dumps(config, indent=2) + "\n").encode(),
        # "format": "pt" is what transformers checks for in a safetensors archive's metadata
        WEIGHTS_FILE: safetensors_bytes(hf_state_dict(model), metadata={"format": "pt"}),
    }
    if tokenizer is not None:
        saved = tokenizer_files(tokenizer)
        if getattr(tokenizer, "kind", None) == "gpt2":
            # only HF's files; minillm's tokenizer.json would be misread by transformers
            files.update({f: saved[f] for f in GPT2_TOKENIZER_FILES})
            tok_cfg = _hf_tokenizer_config(c.block_size)
            files["tokenizer_config.json"] = (json.dumps(tok_cfg, indent=2) + "\n").encode()
        else:
            files.update({f"{MINILLM_TOKENIZER_DIR}/{name}": b for name, b in saved.items()})
    write_dir(out, files)
    return sorted(files)
