"""Hugging Face Llama directories <-> minillm's Llama (SmolLM2, TinyLlama, Llama 2/3 shapes).

    export_hf_llama(model, tok, "out/hf")     # transformers: AutoModelForCausalLM.from_pretrained
    model, tok = load_hf_llama("out/hf")      # also minillm.load("out/hf")

A directory holds

    config.json               LlamaForCausalLM's config (model_type "llama")
    model.safetensors         float32 weights named ``model.embed_tokens.weight``,
                              ``model.layers.N.self_attn.q_proj.weight``, ..., ``model.norm.weight``,
                              and ``lm_head.weight`` only when the head is untied (read also:
                              float16/bfloat16, or shards listed in model.safetensors.index.json)
    tokenizer.json            the `tokenizers` library's format: a BPE model (vocab + merges),
                              the pre-tokenizer, the ByteLevel decoder, the added (special) tokens
    tokenizer_config.json     bos/eos/pad/unk, add_bos_token, model_max_length, chat_template
    special_tokens_map.json   bos/eos/pad/unk

Rotary layout: Hugging Face rotates the two halves of each head (q_proj/k_proj rows 0..hd/2-1
with hd/2..hd-1); a model read from GGUF keeps the file's adjacent-pair rows
(``rope_interleaved``), so export permutes those rows (``gguf.rope_rows_to_hf``) and a loaded
directory is a half-split model (``rope_interleaved`` False). Quantized weights are written
dequantized (the product kernels compute with exactly these values).

Only byte-level BPE tokenizers are written and read here (GGUF ``tokenizer.ggml.model`` gpt2,
with the pre-tokenizers gpt2, smollm and llama-bpe). The directory is untrusted data: the config's
fields are checked and the expected tensor shapes computed from it before any weight is read.
"""

import json
import math
from pathlib import Path

import numpy as np

from minillm.checkpoints.atomic import check_replaceable, write_dir
from minillm.checkpoints.formats import read_json, read_safetensors, safetensors_bytes, to_float32
from minillm.checkpoints.gguf import DTYPES, expected_shapes, rope_rows_to_hf
from minillm.checkpoints.llama import build_llama, llama_tensors
from minillm.errors import CheckpointError, ConfigError, TokenizerError
from minillm.kernels.quant import QuantWeight
from minillm.nn.quant import quantize_linears

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # the shards of a large checkpoint
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
EXPORT_NAMES = {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE,
                SPECIAL_TOKENS_FILE, "generation_config.json"}

# Llama 3's pre-tokenizer pattern (GGUF pre "llama-bpe"), as its tokenizer.json spells it
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                  r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}


def is_hf_llama_dir(path):
    """True if ``path`` is a directory whose config.json says model_type "llama"."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        return False
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("model_type") == "llama"


# ----------------------------------------------------------------------------- config
def hf_config(c, bos_token_id=None, eos_token_id=None):
    """config.json (a dict) of a LlamaConfig, as LlamaForCausalLM reads it."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.n_embd,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(c.rms_norm_eps),
        "rope_theta": float(c.rope_theta),
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": bool(c.tie_word_embeddings),
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": float(c.initializer_range),
        "bos_token_id": c.bos_token_id if bos_token_id is None else bos_token_id,
        "eos_token_id": c.eos_token_id if eos_token_id is None else eos_token_id,
        "torch_dtype": "float32",
    }


def _int(cfg, key, where, default=None, lo=1, hi=1 << 24):
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CheckpointError(f"{where}: {key} must be an integer from {lo} to {hi}, "
                              f"got {v!r}.")
    return v


def _float(cfg, key, where, default):
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise CheckpointError(f"{where}: {key} must be a positive number, got {v!r}.")
    return float(v)


def llama_config_from_hf(cfg, where="config.json"):
    """LlamaConfig fields (a dict) from a Hugging Face config.json dict; one sentence when a
    field is missing, of the wrong type, or describes a variant minillm does not run."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where} is not a JSON object.")
    if cfg.get("model_type") != "llama":
        raise CheckpointError(f"{where}: model_type is {cfg.get('model_type')!r}, not 'llama'.")
    H = _int(cfg, "num_attention_heads", where, hi=1 << 10)
    C = _int(cfg, "hidden_size", where, hi=1 << 16)
    out = {
        "vocab_size": _int(cfg, "vocab_size", where, hi=1 << 22),
        "block_size": _int(cfg, "max_position_embeddings", where, 2048),
        "n_layer": _int(cfg, "num_hidden_layers", where, hi=1 << 10),
        "n_head": H,
        "n_kv_head": _int(cfg, "num_key_value_heads", where, H, hi=H),
        "n_embd": C,
        "intermediate_size": _int(cfg, "intermediate_size", where, hi=1 << 20),
        "rms_norm_eps": _float(cfg, "rms_norm_eps", where, 1e-6),
        "rope_theta": _float(cfg, "rope_theta", where, 10000.0),
        "rope_interleaved": False,
        "tie_word_embeddings": cfg.get("tie_word_embeddings", False),
        "initializer_range": _float(cfg, "initializer_range", where, 0.02),
    }
    if not isinstance(out["tie_word_embeddings"], bool):
        raise CheckpointError(f"{where}: tie_word_embeddings must be true or false.")
    head_dim = cfg.get("head_dim")
    if head_dim is not None and (C % H or head_dim != C // H):
        raise CheckpointError(f"{where}: head_dim {head_dim!r} differs from hidden_size / "
                              f"num_attention_heads; minillm runs heads of that size only.")
    for key, ok in (("hidden_act", ("silu",)), ("attention_bias", (False,)),
                    ("mlp_bias", (False,)), ("rope_scaling", (None,))):
        if key in cfg and cfg[key] not in ok:
            raise CheckpointError(f"{where}: {key} {cfg[key]!r} is not supported; minillm runs "
                                  "Llama models with SiLU, no biases and plain rotary "
                                  "embeddings.")
    for key in ("bos_token_id", "eos_token_id"):
        v = cfg.get(key)
        if isinstance(v, list):  # Llama 3 lists several end tokens: the first is the main one
            v = v[0] if v else None
        if v is not None:
            v = _int({key: v}, key, where, lo=0, hi=out["vocab_size"] - 1)
        out[key] = v
    try:
        from minillm.models.llama import LlamaConfig

        LlamaConfig.from_dict(out)  # the cross-field checks (divisibility, even head size)
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None
    return out


# ----------------------------------------------------------------------------- weights
def hf_state_dict(model):
    """Hugging Face name -> float32 array of a minillm Llama (q/k rows half-split)."""
    c = model.config
    out = {}
    for name, w in llama_tensors(model, "stored").items():
        if c.rope_interleaved and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = rope_rows_to_hf(w, c.n_head if "q_proj" in name else c.n_kv_head)
        if isinstance(w, QuantWeight):
            w = w.dequantize()
        prefix = "" if name == "lm_head.weight" else "model."
        out[prefix + name] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def _read_tensors(path):
    """name -> mapped array of model.safetensors, or of the shards model.safetensors.index.json
    lists (each a plain file name in ``path``: the index is untrusted)."""
    if (path / WEIGHTS_FILE).is_file() or not (path / INDEX_FILE).is_file():
        return read_safetensors(path / WEIGHTS_FILE)
    index = read_json(path / INDEX_FILE)
    shards = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(shards, dict) or not all(isinstance(f, str) for f in shards.values()):
        raise CheckpointError(f"{path / INDEX_FILE} has no weight_map of file names.")
    tensors = {}
    for shard in sorted(set(shards.values())):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise CheckpointError(f"{path / INDEX_FILE} names the shard {shard!r}, which is not "
                                  "a .safetensors file name in the directory.")
        tensors.update(read_safetensors(path / shard))
    return tensors


def read_hf_llama_weights(path, config):
    """Parameter name (minillm's) -> float32 array, checked against the shapes ``config``
    implies before any tensor is read."""
    path = Path(path)
    want = expected_shapes(config)
    tensors = _read_tensors(path)  # headers checked; data mapped, not read
    if config["tie_word_embeddings"]:
        tensors.pop("lm_head.weight", None)  # some tied checkpoints store the copy too
    found = {}
    for name, a in tensors.items():
        p = name if name == "lm_head.weight" else name.removeprefix("model.")
        if (p == name and name != "lm_head.weight") or p not in want:
            raise CheckpointError(f"{path / WEIGHTS_FILE} holds {name!r}, which a "
                                  f"{config['n_layer']}-layer Llama model does not have.")
        if tuple(a.shape) != want[p]:
            raise CheckpointError(f"{path / WEIGHTS_FILE}: {name} has shape {list(a.shape)}, "
                                  f"but config.json implies {list(want[p])}.")
        found[p] = a
    missing = [p for p in want if p not in found]
    if missing:
        raise CheckpointError(f"{path / WEIGHTS_FILE} lacks {missing[0]}"
                              + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                              + ".")
    return {p: to_float32(a) for p, a in found.items()}


# ----------------------------------------------------------------------------- tokenizer
def _pre_tokenizer(pre):
    if pre == "smollm":
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, dict(_BYTE_LEVEL)]}
    if pre in ("gpt2", "default"):
        return dict(_BYTE_LEVEL)
    if pre == "llama-bpe":
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
             "invert": False},
            dict(_BYTE_LEVEL, use_regex=False)]}
    raise TokenizerError(f"the pre-tokenizer {pre!r} has no tokenizer.json spelling here; "
                         "supported: gpt2, smollm, llama-bpe.")


def _pre_name(spec):
    """The minillm pre-tokenizer name of a tokenizer.json pre_tokenizer, or None."""
    if not isinstance(spec, dict):
        return None
    if spec.get("type") == "ByteLevel" and spec.get("use_regex", True):
        return "gpt2"
    if spec.get("type") != "Sequence" or not isinstance(spec.get("pretokenizers"), list):
        return None
    parts = spec["pretokenizers"]
    if len(parts) != 2 or not all(isinstance(p, dict) for p in parts):
        return None
    first, second = parts
    if second.get("type") != "ByteLevel" or second.get("add_prefix_space", False):
        return None
    if (first.get("type") == "Digits" and first.get("individual_digits")
            and second.get("use_regex", True)):
        return "smollm"
    pattern = first.get("pattern")
    if (first.get("type") == "Split" and isinstance(pattern, dict)
            and pattern.get("Regex") == LLAMA3_PATTERN and first.get("behavior") == "Isolated"
            and not first.get("invert") and not second.get("use_regex", True)):
        return "llama-bpe"
    return None


def tokenizer_json(tok):
    """The `tokenizers` library's tokenizer.json (a dict) for a ByteLevelBPETokenizer."""
    from minillm.tokenizers.bpe import CONTROL

    tokens = tok.all_tokens()
    types = tok.all_token_types()
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a duplicate string keeps its first id, as minillm encodes
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": i in tok.control or types[i] == CONTROL}
             for t, i in sorted(tok.special.items(), key=lambda kv: kv[1])]
    if tok.add_bos:
        bos = tokens[tok.bos_id]
        single = [{"SpecialToken": {"id": bos, "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}]
        post = {"type": "TemplateProcessing", "single": single,
                "pair": single + [{"SpecialToken": {"id": bos, "type_id": 1}},
                                  {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [tok.bos_id], "tokens": [bos]}}}
    else:
        post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(tok.pre),
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None,
                  "unk_token": None if tok.unk_id is None else tokens[tok.unk_id],
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in tok.merges]},
    }


def tokenizer_config(tok, model_max_length):
    """tokenizer_config.json and special_tokens_map.json (dicts) for a ByteLevelBPETokenizer."""
    tokens = tok.all_tokens()
    names = {"bos_token": tok.bos_id, "eos_token": tok.eos_id, "pad_token": tok.pad_id,
             "unk_token": tok.unk_id}
    special = {k: tokens[i] for k, i in names.items() if i is not None}
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
           "add_bos_token": bool(tok.add_bos), "add_eos_token": False,
           "clean_up_tokenization_spaces": False, "model_max_length": model_max_length}
    if tok.chat_template is not None:
        cfg["chat_template"] = tok.chat_template
    return cfg, special


def _special_name(value, where, key):
    if value is None:
        return None
    if isinstance(value, dict):  # {"content": "<|im_end|>", ...}, as some files spell it
        value = value.get("content")
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: {key} is not a token string.")
    return value


def tokenizer_from_json(data, tok_cfg, where="tokenizer.json"):
    """A ByteLevelBPETokenizer (with its chat template) from tokenizer.json and
    tokenizer_config.json (dicts); one sentence for anything it cannot represent."""
    from minillm.tokenizers.bpe import CONTROL, NORMAL, UNUSED, USER_DEFINED, ByteLevelBPETokenizer

    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise CheckpointError(f"{where}: minillm reads byte-level BPE tokenizers (model type "
                              "BPE) only.")
    pre = _pre_name(data.get("pre_tokenizer"))
    if pre is None or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise CheckpointError(f"{where}: the pre-tokenizer or decoder is not a byte-level one "
                              "minillm knows (GPT-2's, SmolLM's digit split, Llama 3's).")
    if data.get("normalizer") is not None or model.get("byte_fallback"):
        raise CheckpointError(f"{where}: a normalizer or byte fallback is not supported in a "
                              "byte-level BPE tokenizer.")
    vocab, merges = model.get("vocab"), model.get("merges")
    added = data.get("added_tokens") or []
    if not (isinstance(vocab, dict) and vocab and isinstance(merges, list)
            and isinstance(added, list)):
        raise CheckpointError(f"{where}: the vocabulary, merges or added tokens are missing.")
    ids = {}
    for t, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 1 << 22:
            raise CheckpointError(f"{where}: token {t!r} has id {i!r}.")
        ids[i] = t
    kinds = {}
    for a in added:
        if not (isinstance(a, dict) and isinstance(a.get("content"), str)
                and type(a.get("id")) is int and 0 <= a["id"] < 1 << 22):
            raise CheckpointError(f"{where}: an added token is not {{id, content}}.")
        ids.setdefault(a["id"], a["content"])
        kinds[a["id"]] = CONTROL if a.get("special") else USER_DEFINED
    n = max(ids) + 1
    tokens = [ids.get(i, f"<|minillm_unused_{i}|>") for i in range(n)]
    types = [kinds.get(i, NORMAL if i in ids else UNUSED) for i in range(n)]
    pairs = []
    for m in merges:
        if isinstance(m, str):
            pairs.append(m)
        elif (isinstance(m, list) and len(m) == 2 and all(isinstance(s, str) for s in m)):
            pairs.append(f"{m[0]} {m[1]}")
        else:
            raise CheckpointError(f"{where}: a merge is not a pair of strings.")
    if not isinstance(tok_cfg, dict):
        raise CheckpointError(f"{where}: tokenizer_config.json is not a JSON object.")
    by_text = {t: i for i, t in reversed(list(enumerate(tokens)))}
    special = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        name = _special_name(tok_cfg.get(key), TOKENIZER_CONFIG_FILE, key)
        if name is not None and name not in by_text:
            raise CheckpointError(f"{TOKENIZER_CONFIG_FILE}: {key} {name!r} is not in the "
                                  "vocabulary.")
        special[key] = None if name is None else by_text[name]
    if special["eos_token"] is None:
        raise CheckpointError(f"{TOKENIZER_CONFIG_FILE} names no eos_token.")
    add_bos = tok_cfg.get("add_bos_token")
    if add_bos is None:  # Llama 3 says it only in the post-processor: [bos] + the text
        single = (data.get("post_processor") or {}).get("single")
        first = single[0] if isinstance(single, list) and single else {}
        add_bos = (isinstance(first, dict) and isinstance(first.get("SpecialToken"), dict)
                   and first["SpecialToken"].get("id") == tokens[special["bos_token"] or 0]
                   and special["bos_token"] is not None)
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    try:
        tok = ByteLevelBPETokenizer.from_token_list(
            tokens, pairs, types, pre=pre, eos_id=special["eos_token"],
            bos_id=special["bos_token"], pad_id=special["pad_token"],
            unk_id=special["unk_token"], add_bos=bool(add_bos))
    except TokenizerError as e:
        raise CheckpointError(f"{where}: {e}") from None
    tok.chat_template = template if isinstance(template, str) else None
    return tok


# ----------------------------------------------------------------------------- export / load
def _json_bytes(d):
    return (json.dumps(d, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def export_hf_llama(model, tokenizer, out):
    """Write a minillm Llama (+ its byte-level BPE tokenizer, or None) as a Hugging Face Llama
    directory, atomically; returns the file names."""
    from minillm.tokenizers.bpe import ByteLevelBPETokenizer

    out = Path(out)
    check_replaceable(out, EXPORT_NAMES)
    c = model.config
    if tokenizer is not None and not isinstance(tokenizer, ByteLevelBPETokenizer):
        raise CheckpointError(f"the Hugging Face export writes byte-level BPE tokenizers; this "
                              f"model's is {tokenizer.name} (use --format gguf).")
    bos = getattr(tokenizer, "bos_id", None)
    eos = getattr(tokenizer, "eos_id", None)
    files = {
        CONFIG_FILE: _json_bytes(hf_config(c, bos, eos)),
        # "format": "pt" is what transformers looks for in a safetensors file's metadata
        WEIGHTS_FILE: safetensors_bytes(hf_state_dict(model), metadata={"format": "pt"}),
    }
    if tokenizer is not None:
        cfg, special = tokenizer_config(tokenizer, c.block_size)
        files[TOKENIZER_FILE] = _json_bytes(tokenizer_json(tokenizer))
        files[TOKENIZER_CONFIG_FILE] = _json_bytes(cfg)
        files[SPECIAL_TOKENS_FILE] = _json_bytes(special)
    write_dir(out, files)
    return sorted(files)


def load_hf_llama(path, device="cpu", dtype="stored", **options):
    """(model in eval mode, tokenizer or None) of a Hugging Face Llama directory. ``dtype``:
    "stored" or "float32" hold the weights as float32; "q8_0" quantizes every linear layer
    (the token table and a tied head stay float32)."""
    if options:
        raise ConfigError(f"a Hugging Face Llama directory takes no option "
                          f"{', '.join(sorted(options))}; its options are dtype "
                          f"({', '.join(DTYPES)}) and device")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    path = Path(path)
    where = str(path / CONFIG_FILE)
    config = llama_config_from_hf(read_json(path / CONFIG_FILE), where)
    tensors = read_hf_llama_weights(path, config)
    tokenizer = None
    if (path / TOKENIZER_FILE).is_file():
        tok_cfg = {}
        if (path / TOKENIZER_CONFIG_FILE).is_file():
            tok_cfg = read_json(path / TOKENIZER_CONFIG_FILE)
        tokenizer = tokenizer_from_json(read_json(path / TOKENIZER_FILE), tok_cfg,
                                        str(path / TOKENIZER_FILE))
        if tokenizer.vocab_size > config["vocab_size"]:
            raise CheckpointError(f"the tokenizer in {path} has {tokenizer.vocab_size} tokens "
                                  f"but the model only {config['vocab_size']} embeddings.")
    for key, tok_key in (("bos_token_id", "bos_id"), ("eos_token_id", "eos_id")):
        if config[key] is None and tokenizer is not None:
            config[key] = getattr(tokenizer, tok_key)
    model = build_llama(config, tensors)
    if dtype == "q8_0":
        if device != "cpu":
            raise ConfigError(f"quantized weights run on the CPU; load with dtype 'float32' to "
                              f"use {device}")
        quantize_linears(model, "q8_0")
    if device != "cpu":
        model.to(device)
    return model.eval(), tokenizer
