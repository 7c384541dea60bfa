"""GGUF files (llama.cpp's model format): Llama weights, tokenizer and chat template, in and out.

A GGUF file is a little-endian header and a data section:

    "GGUF"  u32 version (2 or 3)  u64 tensor count  u64 metadata count
    metadata:  (string key, u32 value type, value) ...   strings are u64 length + UTF-8 bytes;
               arrays are u32 item type + u64 count + items
    tensors:   (string name, u32 n_dims, u64 dims[n_dims] innermost first, u32 GGML type,
               u64 offset into the data section) ...
    padding to ``general.alignment`` (32), then every tensor's bytes at its offset.

The file is untrusted data, so the header is read here by a bounded parser (every count and
length is checked against the bytes left before anything is read or allocated) rather than by
``gguf.GGUFReader``, which loops over counts as the file states them; the ``gguf`` package's
reader and quantizers are the tests' independent oracle, and its writer writes files.

Tensor names and the Llama parameter names (Hugging Face's, without "model."):
    token_embd -> embed_tokens, output_norm -> norm, output -> lm_head (absent when tied),
    blk.N.attn_norm / attn_q / attn_k / attn_v / attn_output / ffn_norm / ffn_gate / ffn_up /
    ffn_down -> layers.N.input_layernorm / self_attn.{q,k,v,o}_proj / post_attention_layernorm /
    mlp.{gate,up,down}_proj.
GGUF lists shapes innermost first: ``blk.0.ffn_down.weight`` [F, C] is the (C, F) matrix of a
torch.nn.Linear(F, C).

Rotary layout: GGUF stores the rows of attn_q and attn_k permuted so that each head's rotated
pairs are adjacent rows (Meta's layout); Hugging Face stores them as two halves. ``read_gguf``
keeps the rows as stored and says so with ``rope_interleaved=True``; ``rope_rows_to_hf`` /
``rope_rows_to_gguf`` convert (for float and quantized weights alike, as a row permutation).
``write_gguf`` permutes a half-split (``rope_interleaved=False``) model back, so
read -> write -> read is bit-identical.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minillm.checkpoints.atomic import replacing
from minillm.errors import CheckpointError, TokenizerError
from minillm.kernels import quant as Q

MAGIC = b"GGUF"
ALIGNMENT = 32
MAX_TENSORS = 1 << 16
MAX_KEYS = 1 << 16
MAX_DIMS = 4
DTYPES = ("stored", "float32", "q8_0")

# metadata value types (gguf.GGUFValueType)
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
_NUMPY = {U8: "<u1", I8: "<i1", U16: "<u2", I16: "<i2", U32: "<u4", I32: "<i4", F32: "<f4",
          BOOL: "<u1", U64: "<u8", I64: "<i8", F64: "<f8"}

_GLOBAL_NAMES = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
                 "output.weight": "lm_head.weight"}
_BLOCK_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
                "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                     "tokenizer.ggml.merges", "tokenizer.ggml.scores")
# llama.cpp's general.file_type for a file whose matrices are mostly of one type
_FILE_TYPE = {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q4_1: 3, Q.Q8_0: 7, Q.Q5_0: 8, Q.Q5_1: 9,
              Q.Q2_K: 10, Q.Q3_K: 12, Q.Q4_K: 15, Q.Q5_K: 17, Q.Q6_K: 18, Q.BF16: 32}


# --------------------------------------------------------------------------- names
def param_name(gguf_name):
    """GGUF tensor name -> Llama parameter name, or None for a tensor minillm does not use."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if (len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[3] == "weight"
            and parts[2] in _BLOCK_NAMES):
        return f"layers.{int(parts[1])}.{_BLOCK_NAMES[parts[2]]}.weight"
    return None


def gguf_name(param):
    """Llama parameter name -> GGUF tensor name."""
    for g, p in _GLOBAL_NAMES.items():
        if p == param:
            return g
    parts = param.split(".", 2)
    inverse = {v: k for k, v in _BLOCK_NAMES.items()}
    if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
        sub = parts[2].removesuffix(".weight")
        if sub in inverse and parts[2].endswith(".weight"):
            return f"blk.{int(parts[1])}.{inverse[sub]}.weight"
    raise CheckpointError(f"{param!r} is not a Llama parameter name GGUF can store.")


def expected_shapes(config):
    """Parameter name -> shape (NumPy order) for a Llama config dict."""
    C, V, F, L = (config[k] for k in ("n_embd", "vocab_size", "intermediate_size", "n_layer"))
    hd = C // config["n_head"]
    q, kv = config["n_head"] * hd, config["n_kv_head"] * hd
    shapes = {"embed_tokens.weight": (V, C), "norm.weight": (C,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    for i in range(L):
        p = f"layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (C,), p + "post_attention_layernorm.weight": (C,),
            p + "self_attn.q_proj.weight": (q, C), p + "self_attn.k_proj.weight": (kv, C),
            p + "self_attn.v_proj.weight": (kv, C), p + "self_attn.o_proj.weight": (C, q),
            p + "mlp.gate_proj.weight": (F, C), p + "mlp.up_proj.weight": (F, C),
            p + "mlp.down_proj.weight": (C, F),
        })
    return shapes


# --------------------------------------------------------------------------- rotary rows
def _gguf_row_order(n_rows, n_head):
    # gguf[r] = hf[order[r]]: within each head of hd rows, GGUF row 2i + s is HF row s * hd/2 + i
    hd = n_rows // n_head
    i = np.arange(hd // 2)
    per_head = np.stack([i, i + hd // 2], axis=1).reshape(-1)  # (hd,): 0, hd/2, 1, hd/2+1, ...
    return (np.arange(n_head)[:, None] * hd + per_head[None, :]).reshape(-1)


def _take_rows(w, order):
    if isinstance(w, Q.QuantWeight):
        rows = Q.QuantWeight(w.qtype, w.shape, np.ascontiguousarray(w.row_blocks[order]))
        return rows.to_groups() if w.grouped else rows  # in the layout it came in
    return np.ascontiguousarray(np.asarray(w)[order])


def rope_rows_to_gguf(w, n_head):
    """q/k weight rows in Hugging Face's half-split layout -> GGUF's adjacent-pair layout."""
    return _take_rows(w, _gguf_row_order(w.shape[0], n_head))


def rope_rows_to_hf(w, n_head):
    """q/k weight rows in GGUF's adjacent-pair layout -> Hugging Face's half-split layout."""
    return _take_rows(w, np.argsort(_gguf_row_order(w.shape[0], n_head)))


# --------------------------------------------------------------------------- the header
@dataclass(frozen=True)
class TensorInfo:
    name: str
    qtype: int  # GGML type id
    shape: tuple  # NumPy order (outermost first)
    offset: int  # absolute byte offset in the file
    nbytes: int


class _Truncated(Exception):
    pass


class _Cursor:
    """Reads little-endian values from a buffer; never past its end."""

    def __init__(self, buf):
        self.buf, self.pos, self.end = buf, 0, len(buf)

    def need(self, n):
        if n < 0 or n > self.end - self.pos:
            raise _Truncated

    def scalar(self, t):
        fmt = _SCALAR[t]
        size = struct.calcsize(fmt)
        self.need(size)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def string(self):
        n = self.scalar(U64)
        self.need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("a GGUF string is not valid UTF-8.") from None

    def value(self, t, depth=0):
        if t in _SCALAR:
            return self.scalar(t)
        if t == STRING:
            return self.string()
        if t == ARRAY and depth == 0:
            it, n = self.scalar(U32), self.scalar(U64)
            if it in _SCALAR:
                size = struct.calcsize(_SCALAR[it])
                self.need(n * size)
                a = np.frombuffer(self.buf, dtype=_NUMPY[it], count=n, offset=self.pos)
                self.pos += n * size
                return (a.astype(bool) if it == BOOL else a).tolist()
            if it == STRING:
                self.need(n * 8)  # every string has at least its 8-byte length
                return [self.string() for _ in range(n)]
        if t == ARRAY:
            raise CheckpointError("GGUF metadata holds an array of arrays, which no Llama "
                                  "model uses.")
        raise CheckpointError(f"GGUF metadata holds a value of unknown type {t}.")


@dataclass
class GGUFFile:
    """A GGUF file's header, its data mapped (not read) from disk."""

    path: Path
    version: int
    metadata: dict
    types: dict  # key -> value type (ARRAY keys: (ARRAY, item type))
    tensors: dict  # GGUF name -> TensorInfo, in file order
    buffer: object = field(repr=False)

    def raw(self, name):
        """The bytes of tensor ``name`` as a read-only uint8 array (a view of the mapping)."""
        t = self.tensors[name]
        return np.frombuffer(self.buffer, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def release(self, name):
        """Drop the pages of tensor ``name`` from this process's memory (they stay in the page
        cache, and a later read maps them back): after its bytes were copied, so that a
        loaded model does not hold the file's pages as well as its own copy."""
        t = self.tensors[name]
        page = mmap.PAGESIZE
        start = t.offset // page * page
        end = min(len(self.buffer), -(-(t.offset + t.nbytes) // page) * page)
        if hasattr(self.buffer, "madvise") and hasattr(mmap, "MADV_DONTNEED") and end > start:
            self.buffer.madvise(mmap.MADV_DONTNEED, start, end - start)


def open_gguf(path):
    """Parse the header of the GGUF file at ``path``; CheckpointError (one sentence) when the
    file is missing, not a GGUF, truncated or malformed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"the GGUF file {path} does not exist.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if size < 24 or head != MAGIC:
                raise CheckpointError(f"{path} is not a GGUF file (it does not start with "
                                      "'GGUF').")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise CheckpointError(f"could not read the GGUF file {path} ({e.strerror or e}).") \
            from None
    try:
        return _parse(path, buf, size)
    except _Truncated:
        raise CheckpointError(f"the GGUF file {path} is truncated or corrupt (a length in its "
                              "header runs past the end of the file).") from None
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _type_name(qtype):
    try:
        import gguf

        return gguf.GGMLQuantizationType(qtype).name
    except (ImportError, ValueError):
        return f"number {qtype}"


def _parse(path, buf, size):
    c = _Cursor(buf)
    c.pos = 4
    version = c.scalar(U32)
    if version not in (2, 3):
        hint = " (a big-endian file?)" if version > 0xFFFF else ""
        raise CheckpointError(f"GGUF version {version} is not supported{hint}; minillm reads "
                              "versions 2 and 3.")
    n_tensors, n_keys = c.scalar(U64), c.scalar(U64)
    if n_tensors > MAX_TENSORS or n_keys > MAX_KEYS:
        raise CheckpointError(f"the header claims {n_tensors} tensors and {n_keys} metadata "
                              "keys, more than any model has.")
    metadata, types = {}, {}
    for _ in range(n_keys):
        key = c.string()
        t = c.scalar(U32)
        if t == ARRAY:  # peek the item type for ``types``
            c.need(4)
            types[key] = (ARRAY, struct.unpack_from("<I", buf, c.pos)[0])
        else:
            types[key] = t
        if key in metadata:
            raise CheckpointError(f"metadata key {key!r} appears twice.")
        metadata[key] = c.value(t)
    align = metadata.get("general.alignment", ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise CheckpointError(f"general.alignment {align!r} is not a power of two.")
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.scalar(U32)
        if not 1 <= n_dims <= MAX_DIMS:
            raise CheckpointError(f"tensor {name!r} has {n_dims} dimensions; at most "
                                  f"{MAX_DIMS} are allowed.")
        dims = [c.scalar(U64) for _ in range(n_dims)]
        qtype, offset = c.scalar(U32), c.scalar(U64)
        infos.append((name, dims, qtype, offset))
    data_start = -(-c.pos // align) * align
    tensors = {}
    for name, dims, qtype, offset in infos:
        try:
            f = Q.block_format(qtype)
        except ValueError:
            raise CheckpointError(f"tensor {name!r} has type {_type_name(qtype)}, which is not "
                                  f"supported; supported types: {', '.join(Q.BY_NAME)}.") from None
        if any(d < 1 for d in dims) or dims[0] % f.block_size:
            raise CheckpointError(f"tensor {name!r} has impossible dimensions {dims} for "
                                  f"type {f.name}.")
        n = 1
        for d in dims:
            n *= d
        nbytes = n // f.block_size * f.type_size
        start = data_start + offset
        if offset % align or start + nbytes > size:
            raise _Truncated
        if name in tensors:
            raise CheckpointError(f"tensor {name!r} appears twice.")
        tensors[name] = TensorInfo(name, qtype, tuple(reversed(dims)), start, nbytes)
    return GGUFFile(path, version, metadata, types, tensors, buf)


# --------------------------------------------------------------------------- the model
@dataclass
class GGUFModel:
    """A Llama model read from a GGUF file.

    config:     dict of LlamaConfig fields (vocab_size, block_size, n_layer, n_head, n_kv_head,
                n_embd, intermediate_size, rms_norm_eps, rope_theta, rope_interleaved,
                tie_word_embeddings, bos_token_id, eos_token_id).
    tensors:    parameter name -> float32 ndarray or kernels.quant.QuantWeight.
    tokenizer:  a ByteLevelBPETokenizer ("gpt2" vocabularies) or GGUFSentencePieceTokenizer
                ("llama"); None when the file's tokenizer kind is not supported
                (``tokenizer_note`` says why).
    metadata:   every other metadata key, as plain Python values; ``metadata_types`` their GGUF
                value types (so that a rewrite keeps them).
    tensor_types: parameter name -> GGML type id as stored in the file.
    """

    config: dict
    tensors: dict
    tokenizer: object
    chat_template: str | None
    metadata: dict
    metadata_types: dict = field(default_factory=dict)
    tensor_types: dict = field(default_factory=dict)
    tokenizer_note: str | None = None


def _int(md, key, default=None, lo=1, hi=1 << 31):
    v = md.get(key, default)
    if v is None:
        raise CheckpointError(f"the GGUF metadata lacks {key}, which a Llama model needs.")
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CheckpointError(f"the GGUF metadata {key} = {v!r} is not an integer in "
                              f"{lo}..{hi}.")
    return v


def _float(md, key, default):
    v = md.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise CheckpointError(f"the GGUF metadata {key} = {v!r} is not a positive number.")
    return float(v)


def _config(md, tensors):
    arch = md.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"GGUF architecture {arch!r} is not supported; minillm reads "
                              "'llama' models (Llama, SmolLM, Mistral-style dense models).")
    if md.get("llama.expert_count", 0):
        raise CheckpointError("mixture-of-experts Llama models are not supported.")
    scaling = md.get("llama.rope.scaling.type", "none")
    if scaling != "none" or md.get("llama.rope.scaling.factor", 1.0) not in (0.0, 1.0):
        raise CheckpointError(f"rotary scaling {scaling!r} is not supported; minillm reads "
                              "models with plain rotary embeddings.")
    tokens = md.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        V = len(tokens)
    elif "token_embd.weight" in tensors:
        V = tensors["token_embd.weight"].shape[0]
    else:
        V = _int(md, "llama.vocab_size")
    if not 1 <= V <= 1 << 22:
        raise CheckpointError(f"a vocabulary of {V} tokens is not plausible.")
    C = _int(md, "llama.embedding_length", hi=1 << 16)
    H = _int(md, "llama.attention.head_count", hi=1 << 10)
    cfg = {
        "vocab_size": V,
        "block_size": _int(md, "llama.context_length", hi=1 << 24),
        "n_layer": _int(md, "llama.block_count", hi=1 << 10),
        "n_head": H,
        "n_kv_head": _int(md, "llama.attention.head_count_kv", H, hi=H),
        "n_embd": C,
        "intermediate_size": _int(md, "llama.feed_forward_length", hi=1 << 20),
        "rms_norm_eps": _float(md, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": _float(md, "llama.rope.freq_base", 10000.0),
        "rope_interleaved": True,
        "tie_word_embeddings": "output.weight" not in tensors,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
    }
    if C % H or H % cfg["n_kv_head"] or (C // H) % 2:
        raise CheckpointError(f"{H} heads ({cfg['n_kv_head']} key/value heads) do not divide "
                              f"the embedding width {C} into even head sizes.")
    hd = C // H
    for key in ("llama.rope.dimension_count", "llama.attention.key_length",
                "llama.attention.value_length"):
        if md.get(key, hd) != hd:
            raise CheckpointError(f"{key} = {md[key]} differs from the head size {hd}; only "
                                  "full-width rotary heads of size n_embd / n_head are "
                                  "supported.")
    for key in ("bos_token_id", "eos_token_id"):
        v = cfg[key]
        if v is not None and (not isinstance(v, int) or not 0 <= v < V):
            raise CheckpointError(f"the {key} {v!r} is not a token id of the vocabulary.")
    return cfg


def _tokenizer(md):
    """(tokenizer or None, note) from the tokenizer.ggml.* metadata."""
    from minillm.tokenizers.bpe import ByteLevelBPETokenizer
    from minillm.tokenizers.gguf_spm import GGUFSentencePieceTokenizer

    kind = md.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        return None, (f"tokenizer model {kind!r} is not supported; minillm reads 'gpt2' "
                      "(byte-level BPE) and 'llama' (SentencePiece BPE) vocabularies.")
    tokens, types = md.get("tokenizer.ggml.tokens"), md.get("tokenizer.ggml.token_type")
    if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)):
        raise CheckpointError("the GGUF tokenizer's token list is missing or not strings.")
    if types is not None and not (isinstance(types, list)
                                  and all(type(k) is int for k in types)):
        raise CheckpointError("the GGUF tokenizer's token types are not integers.")
    ids = {k: md.get(f"tokenizer.ggml.{k}") for k in ("bos_token_id", "eos_token_id",
                                                      "unknown_token_id", "padding_token_id")}
    if ids["eos_token_id"] is None:
        raise CheckpointError("the GGUF tokenizer has no tokenizer.ggml.eos_token_id.")
    common = {"eos_id": ids["eos_token_id"], "bos_id": ids["bos_token_id"],
              "pad_id": ids["padding_token_id"], "unk_id": ids["unknown_token_id"]}
    try:
        if kind == "gpt2":
            merges = md.get("tokenizer.ggml.merges", [])
            if not (isinstance(merges, list) and all(isinstance(m, str) for m in merges)):
                raise CheckpointError("the GGUF tokenizer's merges are not strings.")
            tok = ByteLevelBPETokenizer.from_token_list(
                tokens, merges, types, pre=md.get("tokenizer.ggml.pre", "default"),
                add_bos=bool(md.get("tokenizer.ggml.add_bos_token", False)), **common)
        else:
            scores = md.get("tokenizer.ggml.scores")
            if not (isinstance(scores, list) and all(isinstance(x, (int, float))
                                                     for x in scores)):
                raise CheckpointError("the GGUF SentencePiece vocabulary has no scores.")
            tok = GGUFSentencePieceTokenizer(
                tokens, scores, types, add_bos=bool(md.get("tokenizer.ggml.add_bos_token", True)),
                add_space_prefix=bool(md.get("tokenizer.ggml.add_space_prefix", True)), **common)
    except TokenizerError as e:
        raise CheckpointError(f"the GGUF tokenizer cannot be used: {e}") from None
    return tok, None


def _load_tensor(f, info, dtype):
    raw = f.raw(info.name)
    if len(info.shape) == 1 or dtype == "float32" or (dtype == "stored" and info.qtype == Q.F32):
        return Q.dequantize(raw, info.qtype, info.shape)
    out, n_in = info.shape
    if dtype == "q8_0" and info.qtype != Q.Q8_0:
        w = Q.dequantize(raw, info.qtype, info.shape)
        return Q.QuantWeight.from_float(w, Q.Q8_0).to_groups() if n_in % 32 == 0 else w
    w = Q.QuantWeight(info.qtype, info.shape, raw.reshape(out, -1))
    grouped = w.to_groups()  # the layout the CPU kernels decode from (kernels/quant.py)
    if grouped is not w:
        f.release(info.name)
    return grouped


def read_gguf(path, dtype="stored"):
    """Read a Llama GGUF file.

    dtype: what the matrices become. "stored": kept in their file format (quantized ones as
    QuantWeight: Q8_0, Q4_0 and Q4_1 matrices copied into the row-group layout the CPU kernels
    read, other formats viewing the file's mapped bytes; F32 as arrays), "float32":
    dequantized, "q8_0": requantized to Q8_0 (a matrix already Q8_0 is kept as is). Norm
    weights are always float32 arrays.
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    f = open_gguf(path)
    md = f.metadata
    try:
        cfg = _config(md, f.tensors)
    except CheckpointError as e:
        raise CheckpointError(f"{f.path}: {e}") from None
    want = expected_shapes(cfg)
    by_param = {}
    for name, info in f.tensors.items():
        p = param_name(name)
        if p is None or p not in want:
            raise CheckpointError(f"{f.path} holds tensor {name!r}, which a {cfg['n_layer']}-"
                                  "layer Llama model does not have.")
        if info.shape != want[p]:
            raise CheckpointError(f"{f.path}: tensor {name!r} has shape {list(info.shape)}, "
                                  f"but the metadata implies {list(want[p])}.")
        by_param[p] = info
    missing = [gguf_name(p) for p in want if p not in by_param]
    if missing:
        raise CheckpointError(f"{f.path} lacks tensor {missing[0]}"
                              + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                              + ".")
    tokenizer, note = _tokenizer(md)
    tensors = {p: _load_tensor(f, by_param[p], dtype) for p in want}
    rest = {k: v for k, v in md.items()
            if k not in _TOKENIZER_ARRAYS and k != "tokenizer.chat_template"}
    template = md.get("tokenizer.chat_template")
    template = template if isinstance(template, str) else None
    if tokenizer is not None:
        tokenizer.chat_template = template  # so that a saved tokenizer.json carries it
    return GGUFModel(cfg, tensors, tokenizer, template,
                     rest, {k: f.types[k] for k in rest},
                     {p: i.qtype for p, i in by_param.items()}, note)


# --------------------------------------------------------------------------- writing
def _guess_type(v):
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return U32 if 0 <= v < 1 << 32 else I64
    if isinstance(v, float):
        return F32
    if isinstance(v, str):
        return STRING
    if isinstance(v, (list, tuple)):
        items = {_guess_type(x) for x in v} or {STRING}
        if len(items) != 1 or ARRAY in items:
            raise CheckpointError("a GGUF metadata list must hold values of one scalar type.")
        return (ARRAY, items.pop())
    raise CheckpointError(f"a {type(v).__name__} cannot be stored as GGUF metadata.")


def _add(writer, key, value, vtype):
    import gguf

    if isinstance(vtype, tuple):
        writer.add_key_value(key, list(value), gguf.GGUFValueType.ARRAY,
                             sub_type=gguf.GGUFValueType(vtype[1]))
    else:
        writer.add_key_value(key, value, gguf.GGUFValueType(vtype))


def _tokenizer_metadata(tok):
    """tokenizer.ggml.* keys (value, type) for a ByteLevelBPETokenizer (model "gpt2") or a
    GGUFSentencePieceTokenizer (model "llama")."""
    spm = hasattr(tok, "scores")
    tokens = tok.tokens if spm else tok.all_tokens()
    types = tok.token_types if spm else tok.all_token_types()
    md = {"tokenizer.ggml.model": ("llama" if spm else "gpt2", STRING)}
    if spm:
        md["tokenizer.ggml.tokens"] = (list(tokens), (ARRAY, STRING))
        md["tokenizer.ggml.scores"] = ([float(x) for x in tok.scores], (ARRAY, F32))
        md["tokenizer.ggml.token_type"] = (list(types), (ARRAY, I32))
        md["tokenizer.ggml.add_space_prefix"] = (tok.add_space_prefix, BOOL)
    else:
        md["tokenizer.ggml.pre"] = (tok.pre, STRING)
        md["tokenizer.ggml.tokens"] = (list(tokens), (ARRAY, STRING))
        md["tokenizer.ggml.token_type"] = (list(types), (ARRAY, I32))
        md["tokenizer.ggml.merges"] = ([f"{a} {b}" for a, b in tok.merges], (ARRAY, STRING))
    md["tokenizer.ggml.bos_token_id"] = (tok.bos_id, U32)
    md["tokenizer.ggml.eos_token_id"] = (tok.eos_id, U32)
    if getattr(tok, "unk_id", None) is not None:
        md["tokenizer.ggml.unknown_token_id"] = (tok.unk_id, U32)
    if tok.pad_id is not None:
        md["tokenizer.ggml.padding_token_id"] = (tok.pad_id, U32)
    md["tokenizer.ggml.add_bos_token"] = (bool(getattr(tok, "add_bos", False)), BOOL)
    return md


def write_gguf(path, config, tensors, tokenizer=None, chat_template=None, metadata=None,
               metadata_types=None):
    """Write a Llama model as a GGUF file llama.cpp can load.

    tensors: parameter name -> float array (written F32) or QuantWeight (written in its format,
    bytes unchanged). With ``config["rope_interleaved"]`` false, q/k rows are permuted into
    GGUF's layout first. The chat template defaults to the tokenizer's ``chat_template``.
    ``metadata`` adds other keys (e.g. ``general.name``), with their types from
    ``metadata_types`` or guessed; keys this function writes itself take precedence.
    The file is written under a temporary name and renamed, so a crash leaves no half file.
    """
    path = Path(path)
    need = ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd",
            "intermediate_size", "rms_norm_eps", "rope_theta", "tie_word_embeddings")
    lacking = [k for k in need if k not in config]
    if lacking:
        raise CheckpointError(f"the config lacks {', '.join(lacking)}, which a GGUF file needs.")
    want = expected_shapes(config)
    missing = [p for p in want if p not in tensors]
    extra = [p for p in tensors if p not in want]
    if missing or extra:
        raise CheckpointError(f"the tensors do not match the config: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}.")
    H, Hkv = config["n_head"], config["n_kv_head"]
    arrays = {}
    for p, shape in want.items():
        w = tensors[p]
        if not isinstance(w, Q.QuantWeight):
            w = np.ascontiguousarray(w, dtype=np.float32)
        if tuple(w.shape) != shape:
            raise CheckpointError(f"{p} has shape {tuple(w.shape)}, the config implies {shape}.")
        if not config.get("rope_interleaved", True) and p.endswith(("q_proj.weight",
                                                                     "k_proj.weight")):
            w = rope_rows_to_gguf(w, H if "q_proj" in p else Hkv)
        arrays[gguf_name(p)] = w

    try:
        with replacing(path) as tmp:
            _write_file(tmp, config, arrays, tokenizer, chat_template, metadata, metadata_types)
    except OSError as e:  # a full disk, a read-only folder: one sentence
        raise CheckpointError(f"could not write the GGUF file {path} "
                              f"({e.strerror or e}).") from None
    return path


def _write_file(tmp, config, arrays, tokenizer, chat_template, metadata, metadata_types):
    """Write the GGUF file at ``tmp`` with gguf's writer (write_gguf makes it atomic)."""
    import gguf

    H, Hkv = config["n_head"], config["n_kv_head"]
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        C = config["n_embd"]
        own = {
            "llama.context_length": (config["block_size"], U32),
            "llama.embedding_length": (C, U32),
            "llama.block_count": (config["n_layer"], U32),
            "llama.feed_forward_length": (config["intermediate_size"], U32),
            "llama.attention.head_count": (H, U32),
            "llama.attention.head_count_kv": (Hkv, U32),
            "llama.rope.freq_base": (float(config["rope_theta"]), F32),
            "llama.attention.layer_norm_rms_epsilon": (float(config["rms_norm_eps"]), F32),
            "llama.rope.dimension_count": (C // H, U32),
            "llama.vocab_size": (config["vocab_size"], U32),
        }
        mats = Counter(w.qtype for w in arrays.values() if isinstance(w, Q.QuantWeight))
        main = mats.most_common(1)[0][0] if mats else Q.F32
        own["general.file_type"] = (_FILE_TYPE.get(main, 0), U32)
        if mats:
            own["general.quantization_version"] = (2, U32)
        if tokenizer is not None:
            own.update(_tokenizer_metadata(tokenizer))
        if chat_template is None and tokenizer is not None:
            chat_template = getattr(tokenizer, "chat_template", None)
        if chat_template is not None:
            own["tokenizer.chat_template"] = (chat_template, STRING)
        types = dict(metadata_types or {})
        for k, v in (metadata or {}).items():
            if k not in own and k not in ("general.architecture", "general.alignment"):
                own[k] = (v, types.get(k) or _guess_type(v))
        for k, (v, t) in own.items():
            _add(writer, k, v, t)
        for name, w in arrays.items():
            if isinstance(w, Q.QuantWeight):
                writer.add_tensor(name, np.ascontiguousarray(w.row_blocks),
                                  raw_dtype=gguf.GGMLQuantizationType(w.qtype))
            else:
                writer.add_tensor(name, w)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    finally:
        if writer.fout is not None:
            writer.close()
