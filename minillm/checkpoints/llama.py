"""A Llama model from the tensors of a file, without random initialisation.

``build_llama(config, tensors)`` takes LlamaConfig fields and parameter name -> float32 array or
``QuantWeight`` (the names of minillm.models.llama, Hugging Face's without ``model.``) and
returns the model: float arrays fill the Parameters in place; quantized matrices replace their
Linear by a ``QuantLinear`` that keeps the blocks (the product dequantizes inside the kernel), a
quantized token table becomes a ``QuantEmbedding``, and when the head is tied to it the head is a
``QuantLinear`` over the same blocks, so the file's bytes are held once.

``load_gguf(path, dtype=...)`` is ``minillm.load`` for ``.gguf`` files: dtype "stored" keeps every
matrix as the file stores it (4.5 bits a weight for Q4_1), "q8_0" requantizes to Q8_0, "float32"
dequantizes everything.

``llama_tensors(model, dtype)`` is the inverse of ``build_llama`` (the model's tensors by
parameter name), and ``export_gguf(model, tokenizer, path, dtype)`` writes them with
``write_gguf``: a model read from a GGUF file is written back with its blocks unchanged.
"""

import numpy as np

from minillm import backend
from minillm._memory import trim
from minillm.checkpoints.gguf import DTYPES, expected_shapes, read_gguf, write_gguf
from minillm.errors import CheckpointError, ConfigError
from minillm.kernels.quant import MATMUL_TYPES, Q8_0, QuantWeight
from minillm.models.llama import Llama, LlamaConfig
from minillm.nn.quant import QuantLinear, embedding_from, linear_from, named_quant_weights

QUANTIZED_PREFILL_CHUNK = 128  # prompt positions per pass for a model with quantized weights


def _parent(model, name):
    """(module, attribute) that holds parameter ``name`` ("layers.0.mlp.up_proj.weight")."""
    *path, attr, _ = name.split(".")
    m = model
    for p in path:
        m = m[int(p)] if p.isdigit() else getattr(m, p)
    return m, attr


def build_llama(config, tensors, consume=False):
    """The Llama model holding ``tensors`` (every parameter the config implies, nothing else).
    ``consume``: empty the ``tensors`` dict as its arrays are placed, so that the caller holds
    no second reference to a weight the model fuses into a new buffer (the loader's peak memory
    is then the weights and one layer, not the weights and every fused copy)."""
    cfg = LlamaConfig.from_dict(config)
    model = Llama(cfg, init=False)
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise CheckpointError(f"the weights do not fit the model: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}")
    tied = cfg.tie_word_embeddings and isinstance(tensors["embed_tokens.weight"], QuantWeight)
    embed = tensors["embed_tokens.weight"]
    for name in list(tensors):
        w = tensors.pop(name) if consume else tensors[name]
        p = params[name]
        if tuple(w.shape) != tuple(p.shape):
            raise CheckpointError(f"{name} has shape {tuple(w.shape)}, the model needs "
                                  f"{tuple(p.shape)}")
        if not isinstance(w, QuantWeight):
            p.data = w  # float32, as read (the reader owns no other reference)
            continue
        parent, attr = _parent(model, name)
        layer = embedding_from(w) if name == "embed_tokens.weight" else linear_from(w)
        setattr(parent, attr, layer)
    if tied:
        model.lm_head = QuantLinear(embed) if embed.qtype in MATMUL_TYPES else linear_from(embed)
    del embed
    for block in model.layers:
        block.fuse_projections()  # quantized q, k, v and gate, up: one product each to decode
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        # a model kept small: its prompts in chunks small beside its weights (models.decoder)
        model.prefill_chunk = QUANTIZED_PREFILL_CHUNK
    return model


def load_gguf(path, device="cpu", dtype="stored", **options):
    """(model in eval mode, tokenizer with its chat template) of a Llama GGUF file."""
    if options:
        raise ConfigError(f"a GGUF model takes no option {', '.join(sorted(options))}; "
                          f"its options are dtype ({', '.join(DTYPES)}) and device")
    g = read_gguf(path, dtype=dtype)
    if g.tokenizer is None:
        raise CheckpointError(f"{path}: {g.tokenizer_note}")
    model = build_llama(g.config, g.tensors, consume=True)
    trim()  # what loading freed amid what stays (minillm._memory)
    if device != "cpu":
        if any(isinstance(m, QuantLinear) for m in model.modules()):
            raise ConfigError("quantized weights run on the CPU; load with dtype='float32' "
                              f"(--dtype float32) to use {device}")
        model.to(device)
    g.tokenizer.chat_template = g.chat_template
    return model.eval(), g.tokenizer


def llama_tensors(model, dtype="stored"):
    """Parameter name -> float32 array or QuantWeight of a Llama model, in its own rotary layout
    (``model.config.rope_interleaved``): the inverse of ``build_llama``. A tied head is not
    listed (it is ``embed_tokens.weight``). dtype "stored": quantized layers as their blocks,
    float ones as float32; "float32": everything dequantized; "q8_0": every matrix whose rows are
    whole 32-weight blocks requantized to Q8_0 (one already Q8_0 is kept, bytes unchanged)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    want = expected_shapes(model.config.to_dict())
    found = {n: backend.to_numpy(p.data) for n, p in model.named_parameters()}
    found.update(named_quant_weights(model))
    out = {}
    for name in want:
        w = found.get(name)
        if w is None:
            raise CheckpointError(f"the model has no {name}; it is not a plain Llama model "
                                  "(merge LoRA adapters before exporting)")
        if dtype == "float32" and isinstance(w, QuantWeight):
            w = w.dequantize()
        elif dtype == "q8_0" and len(w.shape) == 2 and w.shape[1] % 32 == 0:
            if not (isinstance(w, QuantWeight) and w.qtype == Q8_0):
                w = QuantWeight.from_float(_dense(w), Q8_0)
        if not isinstance(w, QuantWeight):
            w = np.ascontiguousarray(w, dtype=np.float32)
        out[name] = w
    return out


def _dense(w):
    return w.dequantize() if isinstance(w, QuantWeight) else np.asarray(w, dtype=np.float32)


def export_gguf(model, tokenizer, path, dtype="stored"):
    """Write a Llama model (+ its byte-level BPE or SentencePiece tokenizer and chat template)
    as a GGUF file llama.cpp loads; ``dtype`` as in ``llama_tensors``. Returns the path."""
    config = model.config.to_dict()
    tensors = llama_tensors(model, dtype)
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    return write_gguf(path, config, tensors, tokenizer, template,
                      metadata={"general.name": "minillm export"})
