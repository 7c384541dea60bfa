"""Hugging Face GPT-2 directories: load (checked against an independent NumPy GPT-2 forward),
export -> load bit-identical round trips, clear errors, the CLI, and an optional cross-check
with transformers + torch.

No real GPT-2 is downloaded: `write_hf_dir` writes a small directory in the exact layout of the
hub's (config.json with GPT2Config fields, model.safetensors with HF names and Conv1D (in, out)
weights, a byte-level vocab.json + merges.txt). The real files differ only in size.
"""

import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minillm as M
from minillm import backend
from minillm.checkpoints import hf_gpt2
from minillm.checkpoints import run as checkpoint
from minillm.checkpoints.hf_gpt2 import export_hf, load_hf
from minillm.cli import main
from minillm.errors import CheckpointError
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer, GPT2Tokenizer
from minillm.tokenizers.gpt2 import BYTE_TO_UNICODE

L, H, C, P = 2, 2, 16, 12  # layers, heads, width, positions
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n")]
VOCAB = {BYTE_TO_UNICODE[b]: b for b in range(256)}
VOCAB.update({a + b: 256 + i for i, (a, b) in enumerate(MERGES)})
VOCAB["<|endoftext|>"] = len(VOCAB)  # 261
V = len(VOCAB)  # 262
IDS = np.array([[3, 261, 40, 258, 7, 255, 100, 259, 12, 0], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])


def hf_config(**over):
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V,
           "n_positions": P, "n_ctx": P, "n_embd": C, "n_layer": L, "n_head": H,
           "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1,
           "embd_pdrop": 0.1, "attn_pdrop": 0.1, "bos_token_id": 261, "eos_token_id": 261}
    cfg.update(over)
    return cfg


def hf_weights(seed=0):
    """Random GPT-2 weights, HF names without prefix, Conv1D layout (in, out), float32.
    Large enough (std 0.3, LN gains != 1, nonzero biases) that any mix-up changes the logits."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in hf_gpt2.hf_shapes(GPTConfig(V, P, L, H, C)).items():
        if ".ln_" in name or name.startswith("ln_"):
            base = 1.0 if name.endswith("weight") else 0.0
            w[name] = base + 0.2 * rng.standard_normal(shape)
        else:
            w[name] = 0.3 * rng.standard_normal(shape)
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_hf_dir(d, weights=None, prefix="", extra=None, config=None, save=save_file):
    d.mkdir(parents=True, exist_ok=True)
    w = {prefix + k: v for k, v in (weights or hf_weights()).items()}
    w.update(extra or {})
    save(w, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(config or hf_config()))
    (d / "vocab.json").write_text(json.dumps(VOCAB, ensure_ascii=False), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES),
                                  encoding="utf-8")
    return d


def numpy_gpt2(w, ids, n_head=H, eps=1e-5):
    """GPT-2's forward pass written from the paper, in float64, on HF-layout weights.
    w: HF name -> array (Conv1D weights (in, out): y = x W + b); ids: (B, T) -> logits (B, T, V)."""
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def ln(x, p):  # normalise over C, then scale and shift
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def gelu(x):  # the tanh approximation ("gelu_new")
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    B, T = ids.shape
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]  # (B, T, C)
    Cw = x.shape[-1]
    D = Cw // n_head
    future = np.triu(np.ones((T, T), dtype=bool), 1)  # (T, T): True where key is after query
    for i in range(len([k for k in w if k.endswith("ln_1.weight")])):
        p = f"h.{i}."
        qkv = ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # (B, T, 3C)
        q, k, v = (a.reshape(B, T, n_head, D).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, -1))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)  # (B, H, T, T)
        s = np.where(future, -np.inf, s)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, Cw)  # heads side by side
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = gelu(ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])  # (B, T, 4C)
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ w["wte.weight"].T  # (B, T, V), tied head


def logits(model, ids=IDS):
    with M.no_grad():
        return model(ids)[0].numpy()


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("prefix, extra", [
    ("", "buffers"),                      # the official hub files: no prefix, mask buffers
    ("transformer.", "lm_head"),          # save_pretrained: prefixed, maybe a tied lm_head copy
])
def test_load_matches_independent_numpy_forward(tmp_path, prefix, extra):
    w = hf_weights()
    more = {"lm_head.weight": w["wte.weight"].copy()} if extra == "lm_head" else {
        f"h.{i}.attn.{b}": np.ones((1, 1, P, P), np.float32) for i in range(L) for b in ("bias", "masked_bias")}
    d = write_hf_dir(tmp_path / "gpt2", w, prefix=prefix, extra=more)
    model = GPT.from_pretrained(d)
    assert type(model) is GPT and not model.training and model.config.dropout == 0.1
    assert (model.config.block_size, model.config.vocab_size, model.config.bias) == (P, V, True)
    want = numpy_gpt2(w, IDS)
    got = logits(model)
    assert np.abs(want).max() > 1.0  # the weights are not so small that everything is ~0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the minillm weights are the HF ones, Conv1D transposed
    np.testing.assert_array_equal(model.h[1].mlp.c_fc.weight.numpy(), w["h.1.mlp.c_fc.weight"].T)


def test_load_gives_model_and_gpt2_tokenizer(tmp_path):
    d = write_hf_dir(tmp_path / "gpt2")
    state = backend.get_rng_state()
    model, tok = M.load(d)
    assert backend.get_rng_state() == state  # loading does not consume the seeded stream
    assert isinstance(tok, GPT2Tokenizer) and tok.eos_id == 261 and tok.vocab_size == V
    ids = tok.encode(" the tin")  # the merges apply: " the" -> Ġthe, " tin" -> Ġt + in
    assert ids == [VOCAB["Ġthe"], VOCAB["Ġt"], VOCAB["in"]]
    assert tok.decode(ids) == " the tin"
    np.testing.assert_array_equal(logits(model), logits(GPT.from_pretrained(d)))
    assert load_hf(d, dropout=0.0)[0].config.dropout == 0.0


def test_half_precision_and_sharded_files_load(tmp_path):
    w = hf_weights()
    # float16 file: loads as the float32 of the float16 values
    d16 = write_hf_dir(tmp_path / "f16", {k: v.astype(np.float16) for k, v in w.items()})
    got = GPT.from_pretrained(d16).state_dict()["wte.weight"]
    np.testing.assert_array_equal(got, w["wte.weight"].astype(np.float16).astype(np.float32))
    # bfloat16 (no NumPy dtype): written by hand, the top 16 bits of each float32
    d_bf = write_hf_dir(tmp_path / "bf16", w, save=save_bf16)
    trunc = lambda a: (a.view(np.uint32) & 0xFFFF0000).view(np.float32)  # noqa: E731
    m = GPT.from_pretrained(d_bf)
    np.testing.assert_array_equal(m.state_dict()["h.0.attn.c_attn.weight"], trunc(w["h.0.attn.c_attn.weight"]).T)
    # sharded: two files + model.safetensors.index.json, as save_pretrained writes for big models
    d = write_hf_dir(tmp_path / "shard", w)
    (d / "model.safetensors").unlink()
    names = sorted(w)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f, ks in parts.items():
        save_file({k: w[k] for k in ks}, str(d / f))
    index = {"metadata": {}, "weight_map": {k: f for f, ks in parts.items() for k in ks}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(logits(GPT.from_pretrained(d)), logits(GPT.from_pretrained(write_hf_dir(tmp_path / "one", w))))


def save_bf16(tensors, path):
    """A safetensors file with BF16 tensors (the format by hand: u64 header size, JSON, data)."""
    header, blobs, off = {}, [], 0
    for k, a in tensors.items():
        b = (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[k] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


# ----------------------------------------------------------------------------- export
def test_export_then_load_is_bit_identical(tmp_path):
    w = hf_weights(1)
    src = write_hf_dir(tmp_path / "gpt2", w)
    model, tok = load_hf(src)
    names = export_hf(model, tok, tmp_path / "out")
    assert names == ["config.json", "merges.txt", "model.safetensors", "tokenizer_config.json", "vocab.json"]
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(out) == {"transformer." + k for k in w}  # HF names; tied lm_head not stored
    for k, a in w.items():  # the very same float32 bits, Conv1D layout
        b = out["transformer." + k]
        assert b.dtype == np.float32 and b.flags.c_contiguous
        np.testing.assert_array_equal(b, a)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["n_positions"] == cfg["n_ctx"] == P and cfg["vocab_size"] == V
    assert cfg["activation_function"] == "gelu_new" and cfg["tie_word_embeddings"] is True
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == 261
    model2, tok2 = M.load(tmp_path / "out")
    np.testing.assert_array_equal(logits(model2), logits(model))
    assert tok2.vocab == tok.vocab and tok2.merges == tok.merges


def test_export_bias_free_char_model_computes_the_same_function(tmp_path):
    M.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=24, bias=False)).eval()
    for p in model.parameters():  # LN gains away from 1 so that a lost gain would show
        p.data = p.data + 0.1 * backend.rng().standard_normal(p.shape).astype(np.float32)
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .,!?")
    names = export_hf(model, tok, tmp_path / "out")
    assert "minillm_tokenizer/tokenizer.json" in names and "vocab.json" not in names
    w = {k.removeprefix("transformer."): v for k, v in load_file(str(tmp_path / "out" / "model.safetensors")).items()}
    assert not w["h.0.attn.c_attn.bias"].any() and not w["ln_f.bias"].any()  # zeros, as promised
    ids = np.array([[1, 5, 9, 2, 30, 39, 0, 11]])
    np.testing.assert_allclose(numpy_gpt2(w, ids), logits(model, ids), rtol=1e-4, atol=1e-4)
    model2, tok2 = M.load(tmp_path / "out")
    assert model2.config.bias is True and isinstance(tok2, CharTokenizer)
    assert tok2.encode("hello, world") == tok.encode("hello, world")
    np.testing.assert_allclose(logits(model2, ids), logits(model, ids), rtol=1e-6, atol=1e-6)


def test_untied_head_exports_and_loads(tmp_path):
    M.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=8,
                          tie_word_embeddings=False)).eval()
    export_hf(model, GPT2Tokenizer(VOCAB, MERGES), tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    w = load_file(str(tmp_path / "out" / "model.safetensors"))
    np.testing.assert_array_equal(w["lm_head.weight"], model.lm_head.weight.numpy())  # (V, C), no prefix
    model2, _ = load_hf(tmp_path / "out")
    assert model2.config.tie_word_embeddings is False
    np.testing.assert_array_equal(logits(model2, IDS[:, :8]), logits(model, IDS[:, :8]))
    # an untied config whose file has no lm_head is incomplete
    del w["lm_head.weight"]
    save_file(w, str(tmp_path / "out" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"lacks the tensor lm_head\.weight"):
        load_hf(tmp_path / "out")


def test_cli_export(tmp_path, capsys):
    src = write_hf_dir(tmp_path / "gpt2")
    assert main(["export", "--ckpt", str(src), "--out", str(tmp_path / "hf")]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "vocab.json").is_file()
    # a minillm checkpoint (with its tokenizer) exports too
    M.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=8))
    checkpoint.save(tmp_path / "ck", m, tokenizer=GPT2Tokenizer(VOCAB, MERGES))
    assert main(["export", "--ckpt", str(tmp_path / "ck"), "--out", str(tmp_path / "hf2")]) == 0
    np.testing.assert_array_equal(logits(GPT.from_pretrained(tmp_path / "hf2"), IDS[:, :8]), logits(m.eval(), IDS[:, :8]))
    # --out over a folder of other files is refused, and nothing there is lost
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["export", "--ckpt", str(src), "--out", str(tmp_path / "mine")]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a missing --ckpt: exit 2, one sentence with how to get GPT-2
    assert main(["export", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "huggingface-cli download gpt2" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- errors
def _remove(name):
    return lambda d: (d / name).unlink()


def _set_config(**over):
    return lambda d: (d / "config.json").write_text(json.dumps(hf_config(**over)))


def _weights(change):
    def f(d):
        w = hf_weights()
        change(w)
        save_file(w, str(d / "model.safetensors"))
    return f


@pytest.mark.parametrize("damage, match", [
    (_remove("model.safetensors"), r"has no model\.safetensors; download .*huggingface-cli download gpt2 --local-dir"),
    (_remove("config.json"), r"has no config\.json; download .*git clone https://huggingface.co/gpt2"),
    (_remove("merges.txt"), r"has no merges\.txt; download"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]),
     r"model\.safetensors is truncated or corrupt"),
    (_weights(lambda w: w.update({"h.1.mlp.c_fc.weight": np.zeros((4 * C, C), np.float32)})),
     r"tensor h\.1\.mlp\.c_fc\.weight .* has shape \(64, 16\), but the config needs \(16, 64\)"),
    (_weights(lambda w: w.pop("h.1.ln_2.bias")), r"lacks the tensor h\.1\.ln_2\.bias; the download is incomplete"),
    (_weights(lambda w: w.update({"h.2.ln_1.weight": np.ones(C, np.float32)})), r"tensor h\.2\.ln_1\.weight that GPT-2 does not have"),
    (_weights(lambda w: w.update({"lm_head.weight": np.zeros((V, C), np.float32)})), r"lm_head\.weight that differs"),
    (_set_config(activation_function="gelu"), r"activation_function 'gelu'.*tanh GELU"),
    (_set_config(layer_norm_epsilon=1e-6), r"layer_norm_epsilon=1e-06"),
    (_set_config(n_inner=48), r"n_inner=48"),
    (_set_config(n_embd=32), r"tensor wte\.weight .* has shape \(262, 16\), but the config needs \(262, 32\)"),
])
def test_broken_directory_gives_one_clear_sentence(tmp_path, damage, match):
    d = write_hf_dir(tmp_path / "gpt2")
    damage(d)
    with pytest.raises(CheckpointError, match=match):
        load_hf(d)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match=r"no GPT-2 directory at .*huggingface-cli download gpt2"):
        load_hf(tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*huggingface-cli download gpt2"):
        GPT.from_pretrained(tmp_path / "gpt2")
    assert "gpt2-xl" in hf_gpt2.how_to_get("x", n_layer=48)  # the hint names the right size


# ----------------------------------------------------------------------------- transformers
def test_transformers_cross_check(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64,
                                  bos_token_id=299, eos_token_id=299)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF initialises biases and LN to 0/1; make them random too
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ids = np.random.default_rng(0).integers(0, 300, size=(2, 40))
    # HF -> minillm
    ours = GPT.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    diff = np.abs(logits(ours, ids) - want).max()
    print(f"HF -> minillm max abs logit diff {diff:.2e}")
    assert diff <= 1e-4
    # minillm -> HF
    M.manual_seed(1)
    m = GPT(GPTConfig(vocab_size=300, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    for p in m.parameters():
        p.data = p.data + 0.05 * backend.rng().standard_normal(p.shape).astype(np.float32)
    export_hf(m, None, tmp_path / "ours")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        got = theirs(torch.from_numpy(ids)).logits.numpy()
    diff2 = np.abs(got - logits(m, ids)).max()
    print(f"minillm -> HF max abs logit diff {diff2:.2e}")
    assert diff2 <= 1e-4
