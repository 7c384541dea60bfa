"""Llama export and import: Hugging Face directories (minillm.checkpoints.hf_llama) and GGUF
files written back (export_gguf), round trips through both, the tokenizer.json written for the
byte-level BPE, bad directories, the `minillm export` command; marked slow: the real
SmolLM2-135M-Instruct exported both ways answers as before.

The tiny models are random GGUF files written by gguf's own writer (tests/gguf_fixtures.py).
"""

import json

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf
from safetensors.numpy import load_file, save_file

import minillm
from minillm.checkpoints import builtin
from minillm.checkpoints.gguf import read_gguf, rope_rows_to_hf
from minillm.checkpoints.hf_llama import export_hf_llama, load_hf_llama
from minillm.checkpoints.llama import export_gguf
from minillm.cli import main
from minillm.errors import CheckpointError
from minillm.fetch import is_cached
from minillm.kernels.quant import QuantWeight
from minillm.tokenizers.bpe import CONTROL, NORMAL, USER_DEFINED, ByteLevelBPETokenizer
from minillm.tokenizers.chat_template import render_chat

TRICKY = [
    "What is the capital of France? 12345", "It's they're we've I'm he'd you'll",
    "  leading and trailing  ", "tabs\tand\r\nwindows line ends", "naïve café 日本語 🤖",
    "x1y22z333 3.14159 1,000,000", "\u00a0non-breaking\u2003spaces", "١٢٣ arabic digits",
    "<|im_start|>user\nhi<|im_end|>\n", "a<|im_end|>b<|endoftext|>", "", "\n\n\n",
]
IDS = [1, 40, 77, 12, 200, 5, 9, 31, 33, 100, 7, 2]


def logits(model, ids):
    out, _ = model(np.asarray([ids]))
    return np.asarray(out.data, dtype=np.float64)[0]


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny(request, tmp_path_factory):
    """(GGUF path, expected contents, model loaded from it, its tokenizer)."""
    path, expect = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf",
                                   tie=request.param, seed=7)
    model, tok = minillm.load(path)
    return path, expect, model, tok


# ----------------------------------------------------------------------------- HF round trip
def test_export_writes_the_hf_layout(tiny, tmp_path):
    path, expect, model, tok = tiny
    names = export_hf_llama(model, tok, tmp_path / "hf")
    assert names == ["config.json", "model.safetensors", "special_tokens_map.json",
                     "tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    c = expect.config
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"],
            cfg["max_position_embeddings"]) == (c["n_embd"], c["intermediate_size"],
                                                c["n_layer"], c["n_head"], c["n_kv_head"],
                                                c["vocab_size"], c["block_size"])
    assert cfg["tie_word_embeddings"] is c["tie_word_embeddings"]
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    assert (cfg["hidden_act"], cfg["torch_dtype"], cfg["rope_theta"]) == ("silu", "float32",
                                                                         c["rope_theta"])
    w = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert all(a.dtype == np.float32 for a in w.values())
    assert ("lm_head.weight" in w) is not c["tie_word_embeddings"]
    assert all(n.startswith("model.") for n in w if n != "lm_head.weight")
    # every weight is the file's value; q/k rows moved into the half-split layout
    H, Hkv = c["n_head"], c["n_kv_head"]
    for name, want in expect.weights.items():
        if name.endswith("q_proj.weight"):
            want = rope_rows_to_hf(want, H)
        elif name.endswith("k_proj.weight"):
            want = rope_rows_to_hf(want, Hkv)
        key = name if name == "lm_head.weight" else "model." + name
        np.testing.assert_array_equal(w[key], want, err_msg=name)
    tc = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert tc["chat_template"] == expect.chat_template
    assert (tc["bos_token"], tc["eos_token"], tc["pad_token"], tc["unk_token"]) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tc["add_bos_token"] is False and tc["model_max_length"] == c["block_size"]
    sm = json.loads((tmp_path / "hf" / "special_tokens_map.json").read_text())
    assert sm["eos_token"] == "<|im_end|>"


def test_hf_import_gives_the_same_logits_and_tokenizer(tiny, tmp_path):
    path, expect, model, tok = tiny
    export_hf_llama(model, tok, tmp_path / "hf")
    back, tok2 = minillm.load(tmp_path / "hf")  # the loader sends model_type llama here
    assert back.config.rope_interleaved is False and not back.training
    assert back.config.tie_word_embeddings is expect.config["tie_word_embeddings"]
    np.testing.assert_allclose(logits(back, IDS), logits(model, IDS), rtol=1e-5, atol=1e-5)
    assert tok2.chat_template == expect.chat_template
    assert (tok2.bos_id, tok2.eos_id, tok2.pad_id, tok2.unk_id, tok2.pre) == (1, 2, 2, 0,
                                                                             "smollm")
    for text in TRICKY:
        assert tok2.encode(text) == tok.encode(text), text
    # the KV-cached decoding path of the imported model agrees with the full forward
    cache = back.new_kv_cache(1)
    for t, i in enumerate(IDS):
        step, _ = back(np.asarray([[i]]), kv_cache=cache)
        np.testing.assert_allclose(step.data[0, -1], logits(back, IDS[:t + 1])[-1],
                                   rtol=1e-4, atol=1e-4)


def test_gguf_to_hf_to_gguf_keeps_every_value(tiny, tmp_path):
    """GGUF -> HF -> GGUF: the file's float32 tensors come back bit for bit (the q/k row
    permutation undone), and the quantized ones as exactly their dequantized values."""
    path, expect, model, tok = tiny
    export_hf_llama(model, tok, tmp_path / "hf")
    hf_model, hf_tok = load_hf_llama(tmp_path / "hf")
    out = export_gguf(hf_model, hf_tok, tmp_path / "back.gguf")
    orig, back = read_gguf(path, dtype="float32"), read_gguf(out)
    assert back.config == orig.config  # the writer stored the interleaved layout again
    for name, want in orig.tensors.items():
        got = back.tensors[name]
        assert isinstance(got, np.ndarray), name  # HF holds float32, so the file does
        if expect.types[name] == 0:
            assert got.tobytes() == want.tobytes(), name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert back.tokenizer.tokens == orig.tokenizer.tokens
    assert back.tokenizer.merges == orig.tokenizer.merges
    assert back.chat_template == orig.chat_template


# ----------------------------------------------------------------------------- GGUF round trip
def test_gguf_export_keeps_the_blocks(tiny, tmp_path):
    """import -> export -> import is bit-identical: quantized blocks are written unchanged (an
    F16 matrix, held as float32 because it has no product kernel, comes back with the same
    values), and a second export is byte-for-byte the first."""
    path, expect, model, tok = tiny
    first = export_gguf(model, tok, tmp_path / "a.gguf")
    orig, back = read_gguf(path), read_gguf(first)
    for name, w in orig.tensors.items():
        v = back.tensors[name]
        if isinstance(w, QuantWeight) and w.qtype in (2, 3, 8):  # Q4_0, Q4_1, Q8_0
            assert isinstance(v, QuantWeight) and v.qtype == w.qtype, name
            assert np.array_equal(v.blocks, w.blocks), name
        else:
            want = w.dequantize() if isinstance(w, QuantWeight) else w
            np.testing.assert_array_equal(v, want, err_msg=name)
    assert back.config == orig.config and back.chat_template == orig.chat_template
    assert back.tokenizer.tokens == orig.tokenizer.tokens
    assert back.tokenizer.token_types == orig.tokenizer.token_types
    again_model, again_tok = minillm.load(first)
    np.testing.assert_array_equal(logits(again_model, IDS), logits(model, IDS))
    second = export_gguf(again_model, again_tok, tmp_path / "b.gguf")
    assert second.read_bytes() == first.read_bytes()


def test_gguf_export_dtypes(tiny, tmp_path):
    path, expect, model, tok = tiny
    f32 = read_gguf(export_gguf(model, tok, tmp_path / "f.gguf", dtype="float32"))
    assert not any(isinstance(w, QuantWeight) for w in f32.tensors.values())
    for name, w in read_gguf(path, dtype="float32").tensors.items():
        np.testing.assert_array_equal(f32.tensors[name], w, err_msg=name)
    q8 = read_gguf(export_gguf(model, tok, tmp_path / "q.gguf", dtype="q8_0"))
    mats = {n: w for n, w in q8.tensors.items() if n.endswith("proj.weight")}
    assert mats and all(isinstance(w, QuantWeight) and w.qtype == 8 for w in mats.values())


# ----------------------------------------------------------------------------- tokenizer.json
def _independent_tokenizer(data, tok_cfg):
    """A ByteLevelBPETokenizer built straight from the JSON (not through hf_llama's reader):
    vocab ids, merges, added tokens as control (special) or user-defined tokens."""
    tokens = {i: t for t, i in data["model"]["vocab"].items()}
    kinds = {}
    for a in data["added_tokens"]:
        tokens[a["id"]] = a["content"]
        kinds[a["id"]] = CONTROL if a["special"] else USER_DEFINED
    n = max(tokens) + 1
    ids = {t: i for i, t in tokens.items()}
    return ByteLevelBPETokenizer.from_token_list(
        [tokens[i] for i in range(n)], [f"{a} {b}" for a, b in data["model"]["merges"]],
        [kinds.get(i, NORMAL) for i in range(n)], pre="smollm",
        eos_id=ids[tok_cfg["eos_token"]], bos_id=ids[tok_cfg["bos_token"]])


def test_tokenizer_json_encodes_as_the_original(tiny, tmp_path):
    path, expect, model, tok = tiny
    export_hf_llama(model, tok, tmp_path / "hf")
    data = json.loads((tmp_path / "hf" / "tokenizer.json").read_text(encoding="utf-8"))
    tok_cfg = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    m = data["model"]
    assert m["type"] == "BPE" and m["byte_fallback"] is False
    assert data["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits",
                                                         "individual_digits": True}
    assert data["pre_tokenizer"]["pretokenizers"][1]["type"] == "ByteLevel"
    assert data["decoder"]["type"] == "ByteLevel"
    assert [(a["content"], a["id"], a["special"]) for a in data["added_tokens"]] == [
        ("<|endoftext|>", 0, True), ("<|im_start|>", 1, True), ("<|im_end|>", 2, True)]
    mine = _independent_tokenizer(data, tok_cfg)
    for text in TRICKY:
        assert mine.encode(text) == tok.encode(text), text
        assert mine.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_tokenizer_json_with_the_tokenizers_library(tiny, tmp_path):
    # (tests/tokenizers is a namespace package named "tokenizers" too: look for the library's class)
    Tokenizer = getattr(pytest.importorskip("tokenizers"), "Tokenizer", None)
    if Tokenizer is None:
        pytest.skip("the tokenizers library is not installed")
    path, expect, model, tok = tiny
    export_hf_llama(model, tok, tmp_path / "hf")
    hf = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    for text in TRICKY:
        assert hf.encode(text).ids == tok.encode(text), text


# ----------------------------------------------------------------------------- bad directories
def _exported(tiny, tmp_path):
    path, expect, model, tok = tiny
    export_hf_llama(model, tok, tmp_path / "hf")
    return tmp_path / "hf"


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes, match", [
    ({"hidden_size": "abc"}, "hidden_size must be an integer"),
    ({"num_hidden_layers": -3}, "num_hidden_layers must be an integer"),
    ({"num_key_value_heads": 3}, "not divisible"),
    ({"rms_norm_eps": "tiny"}, "rms_norm_eps must be a positive number"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"eos_token_id": 10 ** 9}, "eos_token_id must be an integer"),
])
def test_bad_config_is_one_sentence(tiny, tmp_path, changes, match):
    d = _exported(tiny, tmp_path)
    _edit_config(d, **changes)
    with pytest.raises(CheckpointError, match=match) as e:
        minillm.load(d)
    assert "\n" not in str(e.value)


def test_weights_that_disagree_with_the_config_are_refused(tiny, tmp_path):
    d = _exported(tiny, tmp_path)
    w = load_file(str(d / "model.safetensors"))
    good = dict(w)
    w["model.layers.1.mlp.up_proj.weight"] = np.zeros((5, 64), np.float32)
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"up_proj\.weight has shape \[5, 64\], but "
                                              r"config\.json implies \[96, 64\]"):
        minillm.load(d)
    # a config that promises more layers than the file holds
    save_file(good, str(d / "model.safetensors"))
    _edit_config(d, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=r"lacks layers\.2\."):
        minillm.load(d)
    _edit_config(d, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match="which a 1-layer Llama model does not have"):
        minillm.load(d)


def test_bad_tokenizer_and_truncated_weights(tiny, tmp_path):
    d = _exported(tiny, tmp_path)
    data = json.loads((d / "tokenizer.json").read_text())
    data["model"]["type"] = "WordPiece"
    (d / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="byte-level BPE"):
        minillm.load(d)
    d2 = _exported(tiny, tmp_path / "2")
    raw = (d2 / "model.safetensors").read_bytes()
    (d2 / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        minillm.load(d2)


def test_export_refuses_a_folder_of_other_files(tiny, tmp_path):
    path, expect, model, tok = tiny
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="notes.txt"):
        export_hf_llama(model, tok, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- the CLI
def test_cli_export_both_formats(tiny, tmp_path, capsys):
    path, expect, model, tok = tiny
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "hf")]) == 0
    assert "exported" in capsys.readouterr().out
    hf_model, _ = minillm.load(tmp_path / "hf")
    np.testing.assert_allclose(logits(hf_model, IDS), logits(model, IDS), rtol=1e-5, atol=1e-5)
    gguf_out = tmp_path / "m.gguf"
    assert main(["export", "--ckpt", str(path), "--out", str(gguf_out), "--format", "gguf"]) == 0
    assert str(gguf_out) in capsys.readouterr().out
    np.testing.assert_array_equal(logits(minillm.load(gguf_out)[0], IDS), logits(model, IDS))
    # from the HF directory back to GGUF, requantized to Q8_0
    assert main(["export", "--ckpt", str(tmp_path / "hf"), "--out", str(tmp_path / "q.gguf"),
                 "--format", "gguf", "--dtype", "q8_0"]) == 0
    assert read_gguf(tmp_path / "q.gguf").tensors["layers.0.mlp.up_proj.weight"].qtype == 8
    # --dtype belongs to GGUF; a directory is no GGUF file name
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "x"),
                 "--dtype", "q8_0"]) == 2
    assert "--format gguf" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "hf"),
                 "--format", "gguf"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_cli_gguf_export_of_a_gpt_is_one_sentence(tmp_path, capsys):
    from minillm.checkpoints import run as checkpoint
    from minillm.models import GPT, GPTConfig

    minillm.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=8))
    checkpoint.save(tmp_path / "ck", m)
    assert main(["export", "--ckpt", str(tmp_path / "ck"), "--out", str(tmp_path / "g.gguf"),
                 "--format", "gguf"]) == 2
    err = capsys.readouterr().err
    assert "GGUF export is for Llama models" in err and "Traceback" not in err
    assert not (tmp_path / "g.gguf").exists()


# ----------------------------------------------------------------------------- the real model
REAL = builtin.cache_path("smollm2-135m-instruct")


@pytest.mark.slow
@pytest.mark.skipif(not is_cached(REAL, builtin.SMOLLM2_135M_INSTRUCT.source.sha256),
                    reason="the built-in SmolLM2-135M-Instruct is not cached")
def test_real_model_exported_both_ways_answers_the_same(tmp_path):
    model, tok = minillm.load(REAL)
    prompt = render_chat(tok.chat_template,
                         [{"role": "user", "content": "What is the capital of France?"}],
                         add_generation_prompt=True)
    options = dict(max_new_tokens=12, greedy=True)
    want = minillm.generate(model, tok, prompt, **options)
    assert "Paris" in want
    export_hf_llama(model, tok, tmp_path / "hf")
    export_gguf(model, tok, tmp_path / "m.gguf")
    hf_model, hf_tok = minillm.load(tmp_path / "hf")
    assert hf_tok.encode(prompt) == tok.encode(prompt)
    assert minillm.generate(hf_model, hf_tok, prompt, **options) == want
    g_model, g_tok = minillm.load(tmp_path / "m.gguf")
    assert minillm.generate(g_model, g_tok, prompt, **options) == want
    orig, back = read_gguf(REAL), read_gguf(tmp_path / "m.gguf")
    for name, w in orig.tensors.items():
        v = back.tensors[name]
        if isinstance(w, QuantWeight):
            assert np.array_equal(v.blocks, w.blocks), name
        else:
            assert v.tobytes() == w.tobytes(), name


def test_a_sentencepiece_vocabulary_goes_to_gguf_only(tmp_path, capsys):
    path, _ = write_tiny_gguf(tmp_path / "spm.gguf", tokenizer="llama")
    model, tok = minillm.load(path)
    with pytest.raises(CheckpointError, match="use --format gguf"):
        export_hf_llama(model, tok, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    back = read_gguf(export_gguf(model, tok, tmp_path / "again.gguf"))
    assert back.tokenizer.encode("The fox runs.") == tok.encode("The fox runs.")
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "hf")]) == 2
    assert "--format gguf" in capsys.readouterr().err


def test_reads_the_older_spellings_of_hub_files(tiny, tmp_path):
    """Merges as "a b" strings, special tokens as {"content": ...} and a list of named chat
    templates, as older tokenizer files on the hub spell them."""
    path, expect, model, tok = tiny
    d = _exported(tiny, tmp_path)
    data = json.loads((d / "tokenizer.json").read_text())
    data["model"]["merges"] = [f"{a} {b}" for a, b in data["model"]["merges"]]
    (d / "tokenizer.json").write_text(json.dumps(data))
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["eos_token"] = {"content": tc["eos_token"], "special": True}
    tc["chat_template"] = [{"name": "default", "template": tc["chat_template"]},
                           {"name": "tool_use", "template": "{{ 1 }}"}]
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    _, tok2 = minillm.load(d)
    assert tok2.eos_id == 2 and tok2.chat_template == expect.chat_template
    for text in TRICKY:
        assert tok2.encode(text) == tok.encode(text), text
    tc["eos_token"] = "<|no such token|>"
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(CheckpointError, match="is not in the vocabulary"):
        minillm.load(d)


def test_sharded_weights_and_bad_shard_names(tiny, tmp_path):
    path, expect, model, tok = tiny
    d = _exported(tiny, tmp_path)
    w = load_file(str(d / "model.safetensors"))
    names = sorted(w)
    half = {n: w[n] for n in names[: len(names) // 2]}
    rest = {n: w[n] for n in names[len(names) // 2:]}
    save_file(half, str(d / "model-00001-of-00002.safetensors"))
    save_file(rest, str(d / "model-00002-of-00002.safetensors"))
    (d / "model.safetensors").unlink()
    weight_map = {n: "model-00001-of-00002.safetensors" for n in half}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n in rest})
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    back, _ = minillm.load(d)
    np.testing.assert_allclose(logits(back, IDS), logits(model, IDS), rtol=1e-5, atol=1e-5)
    weight_map[names[0]] = "../../etc/passwd.safetensors"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="not a .safetensors file name in the directory"):
        minillm.load(d)


def test_a_tokenizer_that_prepends_bos(tiny, tmp_path):
    path, expect, model, tok = tiny
    bos_tok = ByteLevelBPETokenizer.from_token_list(
        tok.tokens, [f"{a} {b}" for a, b in tok.merges], tok.token_types, pre=tok.pre,
        eos_id=tok.eos_id, bos_id=tok.bos_id, pad_id=tok.pad_id, unk_id=tok.unk_id,
        add_bos=True)
    export_hf_llama(model, bos_tok, tmp_path / "hf")
    data = json.loads((tmp_path / "hf" / "tokenizer.json").read_text())
    assert data["post_processor"]["type"] == "TemplateProcessing"
    _, back = minillm.load(tmp_path / "hf")
    assert back.add_bos and back.encode("hi there") == bos_tok.encode("hi there")
    assert back.encode("hi there")[0] == tok.bos_id
    # without add_bos_token in tokenizer_config.json (Llama 3), the post-processor says it
    tc_path = tmp_path / "hf" / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    del tc["add_bos_token"]
    tc_path.write_text(json.dumps(tc))
    assert minillm.load(tmp_path / "hf")[1].add_bos


def test_hf_directory_with_dtype_options(tiny, tmp_path):
    from minillm.errors import ConfigError
    from minillm.nn.quant import QuantLinear

    path, expect, model, tok = tiny
    d = _exported(tiny, tmp_path)
    plain, _ = minillm.load(d, dtype="float32")
    q8, _ = minillm.load(d, dtype="q8_0")
    layers = [m for m in q8.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 7 * expect.config["n_layer"] + (not expect.config["tie_word_embeddings"])
    assert all(m.weight.qtype == 8 for m in layers)
    a, b = logits(q8, IDS), logits(plain, IDS)  # 8-bit weights: close, not equal
    assert 0 < np.abs(a - b).max() < 0.05 * np.abs(b).max()
    with pytest.raises(ConfigError, match="takes no option quantize"):
        minillm.load(d, quantize="q4")
    with pytest.raises(ConfigError, match="dtype 'q4' is not one of"):
        minillm.load(d, dtype="q4")
