"""minillm.checkpoints.gguf: tiny random Llama GGUF files written by the gguf package's writer
are read back exactly; read -> write -> read is bit-identical; bad files get one sentence."""

import struct

import gguf
import numpy as np
import pytest
from gguf_fixtures import real_gguf, write_tiny_gguf

from minillm.checkpoints import gguf as G
from minillm.errors import CheckpointError
from minillm.kernels import quant as Q


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def dense(w):
    return w.dequantize() if isinstance(w, Q.QuantWeight) else w


def one_sentence(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for n in needles:
        assert n in msg, msg


@pytest.mark.parametrize("tie", [True, False])
def test_read_tiny_llama_stored(tmp_path, tie):
    path, expect = write_tiny_gguf(tmp_path / "t.gguf", tie=tie)
    m = G.read_gguf(path)
    want = dict(expect.config, rms_norm_eps=float(np.float32(1e-5)))
    assert m.config == want
    assert set(m.tensors) == set(expect.weights)
    for p, w in m.tensors.items():
        stored = expect.types[p]
        assert m.tensor_types[p] == stored
        if stored in Q.MATMUL_TYPES or stored == Q.F16:
            assert isinstance(w, Q.QuantWeight) and w.qtype == stored, p
        else:
            assert isinstance(w, np.ndarray) and w.dtype == np.float32, p
        np.testing.assert_array_equal(dense(w), expect.weights[p], err_msg=p)
    assert m.chat_template == expect.chat_template
    assert m.tokenizer.tokens == expect.tokens and m.tokenizer.pre == "smollm"
    assert m.metadata["general.name"] == "tiny random llama"
    assert "tokenizer.ggml.tokens" not in m.metadata


def test_read_as_float32_and_as_q8_0(tiny):
    path, expect = tiny
    f = G.read_gguf(path, dtype="float32")
    for p, w in f.tensors.items():
        assert isinstance(w, np.ndarray) and w.dtype == np.float32
        np.testing.assert_array_equal(w, expect.weights[p])
    q = G.read_gguf(path, dtype="q8_0")
    for p, w in q.tensors.items():
        if expect.weights[p].ndim == 1:
            assert isinstance(w, np.ndarray)
            continue
        assert isinstance(w, Q.QuantWeight) and w.qtype == Q.Q8_0
        want = Q.quantize(expect.weights[p], Q.Q8_0)
        np.testing.assert_array_equal(w.row_blocks, want, err_msg=p)
    with pytest.raises(CheckpointError, match="dtype 'int4'") as e:
        G.read_gguf(path, dtype="int4")
    one_sentence(e)


def test_quantized_weights_are_held_in_row_groups(tiny):
    # the loader copies Q8_0/Q4_0/Q4_1 matrices into the decode kernel's layout once (and drops
    # the file's pages); the bytes are the file's, permuted
    m = G.read_gguf(tiny[0])
    f = G.open_gguf(tiny[0])
    qw = m.tensors["layers.0.self_attn.q_proj.weight"]
    assert qw.grouped and qw.blocks.flags.writeable
    raw = f.raw("blk.0.attn_q.weight").reshape(qw.shape[0], -1)
    np.testing.assert_array_equal(qw.row_blocks, raw)


def test_read_write_read_is_bit_identical(tiny, tmp_path):
    m = G.read_gguf(tiny[0])
    out = G.write_gguf(tmp_path / "again.gguf", m.config, m.tensors, m.tokenizer,
                       m.chat_template, m.metadata, m.metadata_types)
    m2 = G.read_gguf(out)
    assert m2.config == m.config and m2.chat_template == m.chat_template
    # every key comes back; the writer adds the three llama.cpp keys the fixture lacks
    added = {"general.file_type": 3, "general.quantization_version": 2,  # 3: mostly Q4_1
             "llama.vocab_size": m.config["vocab_size"]}
    assert m2.metadata == {**m.metadata, **added}
    assert {k: m2.metadata_types[k] for k in m.metadata} == m.metadata_types
    assert m2.tensor_types == m.tensor_types
    for p, w in m.tensors.items():
        w2 = m2.tensors[p]
        if isinstance(w, Q.QuantWeight):
            assert w2.qtype == w.qtype and np.array_equal(w2.blocks, w.blocks), p
        else:
            assert np.array_equal(w2, w), p
    t, t2 = m.tokenizer, m2.tokenizer
    assert (t2.tokens, t2.token_types, t2.merges) == (t.tokens, t.token_types, t.merges)
    assert (t2.bos_id, t2.eos_id, t2.pad_id, t2.unk_id, t2.add_bos) == (1, 2, 2, 0, False)
    # and the gguf package reads what we wrote
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.architecture"].contents() == "llama"
    assert len(r.tensors) == len(m.tensors)


def test_write_checks_config_and_tensors(tiny, tmp_path):
    m = G.read_gguf(tiny[0])
    out = tmp_path / "out"
    out.mkdir()
    cfg = {k: v for k, v in m.config.items() if k != "rope_theta"}
    with pytest.raises(CheckpointError, match="lacks rope_theta") as e:
        G.write_gguf(out / "w.gguf", cfg, m.tensors)
    one_sentence(e)
    tensors = {k: v for k, v in m.tensors.items() if k != "norm.weight"}
    with pytest.raises(CheckpointError, match="missing"):
        G.write_gguf(out / "w.gguf", m.config, tensors)
    tensors = dict(m.tensors, **{"norm.weight": np.ones(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"norm.weight has shape \(3,\)"):
        G.write_gguf(out / "w.gguf", m.config, tensors)
    assert not list(out.iterdir())  # nothing half-written is left behind


def test_rope_rows_layouts(tiny, tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4 * 16, 64)).astype(np.float32)
    hf = G.rope_rows_to_hf(w, 4)
    # the un-permutation written out in REAL_LLM_NOTES.md
    np.testing.assert_array_equal(hf, w.reshape(4, 8, 2, 64).swapaxes(1, 2).reshape(64, 64))
    np.testing.assert_array_equal(G.rope_rows_to_gguf(hf, 4), w)
    qw = Q.QuantWeight.from_float(w, Q.Q4_1)
    np.testing.assert_array_equal(G.rope_rows_to_hf(qw, 4).dequantize(), G.rope_rows_to_hf(
        qw.dequantize(), 4))
    # a half-split model is written in GGUF's layout and reads back interleaved
    m = G.read_gguf(tiny[0], dtype="float32")
    cfg = dict(m.config, rope_interleaved=False)
    tensors = dict(m.tensors)
    for i in range(2):
        for name, heads in (("q_proj", 4), ("k_proj", 2)):
            p = f"layers.{i}.self_attn.{name}.weight"
            tensors[p] = G.rope_rows_to_hf(tensors[p], heads)
    back = G.read_gguf(G.write_gguf(tmp_path / "hf.gguf", cfg, tensors, m.tokenizer))
    for p, w in m.tensors.items():
        np.testing.assert_array_equal(back.tensors[p], w, err_msg=p)


# --------------------------------------------------------------------------- bad files
def test_wrong_architecture(tmp_path):
    path, _ = write_tiny_gguf(tmp_path / "g.gguf", arch="gpt2")
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e, "'gpt2' is not supported", "'llama'")


def test_unknown_tensor_type(tiny):
    path = tiny[0]
    data = bytearray(path.read_bytes())
    at = data.find(b"output_norm.weight") + len(b"output_norm.weight")
    assert struct.unpack_from("<I", data, at)[0] == 1  # n_dims
    struct.pack_into("<I", data, at + 4 + 8, 16)  # its type -> IQ2_XXS
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e, "IQ2_XXS", "is not supported", "Q4_1")


def test_missing_tensor(tmp_path):
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", drop=("blk.1.ffn_down.weight",))
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e, "lacks tensor blk.1.ffn_down.weight")


def test_wrong_shape_and_unused_tensor(tmp_path):
    path, _ = write_tiny_gguf(tmp_path / "s.gguf", shapes={"blk.0.attn_k.weight": (16, 64)})
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e, "blk.0.attn_k.weight", "[16, 64]", "[32, 64]")


@pytest.mark.parametrize("keep", [10, 300, -100])
def test_truncated_file(tiny, keep):
    path = tiny[0]
    data = path.read_bytes()
    path.write_bytes(data[:keep])  # a header cut short, or the last tensor
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e)
    assert "truncated" in str(e.value) or "not a GGUF" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model at all\n" * 3,
                                     b"GGML" + bytes(40)])
def test_not_a_gguf(tmp_path, content):
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e, "is not a GGUF file")
    with pytest.raises(CheckpointError, match="does not exist"):
        G.read_gguf(tmp_path / "nope.gguf")


def _header(*kvs, n_tensors=0):
    out = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs))
    for key, body in kvs:
        out += struct.pack("<Q", len(key)) + key + body
    return out


def test_hostile_counts_fail_fast(tmp_path):
    path = tmp_path / "h.gguf"
    # an array of 2**60 bytes in a 60-byte file: refused before reading or allocating
    path.write_bytes(_header((b"x", struct.pack("<IIQ", G.ARRAY, G.U8, 1 << 60))))
    with pytest.raises(CheckpointError, match="truncated") as e:
        G.open_gguf(path)
    one_sentence(e)
    path.write_bytes(_header((b"x", struct.pack("<IIQ", G.ARRAY, G.STRING, 1 << 40))))
    with pytest.raises(CheckpointError, match="truncated"):
        G.open_gguf(path)
    path.write_bytes(_header((b"x", struct.pack("<I", 99) + bytes(8))))
    with pytest.raises(CheckpointError, match="unknown type 99"):
        G.open_gguf(path)
    path.write_bytes(_header((b"x", struct.pack("<IIQ", G.ARRAY, G.ARRAY, 1) + bytes(16))))
    with pytest.raises(CheckpointError, match="array of arrays"):
        G.open_gguf(path)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0) + bytes(16))
    with pytest.raises(CheckpointError, match="more than any model"):
        G.open_gguf(path)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0) + bytes(16))
    with pytest.raises(CheckpointError, match="version 1 is not supported"):
        G.open_gguf(path)


def test_unsupported_pretokenizer(tmp_path):
    path, _ = write_tiny_gguf(tmp_path / "p.gguf", pre="qwen9")
    with pytest.raises(CheckpointError) as e:
        G.read_gguf(path)
    one_sentence(e, "'qwen9' is not supported", "smollm")


# --------------------------------------------------------------------------- the real file
@pytest.mark.slow
def test_real_smollm2_file_against_the_gguf_reader():

    REAL = real_gguf()
    f = G.open_gguf(REAL)
    r = gguf.GGUFReader(REAL)
    for key, field in r.fields.items():
        if not key.startswith("GGUF."):
            got = f.metadata[key]
            want = field.contents()
            assert got == want or np.isclose(got, want), key
    assert len(f.tensors) == len(r.tensors) == 272
    for t in r.tensors[:12] + r.tensors[-3:]:
        np.testing.assert_array_equal(f.raw(t.name), np.asarray(t.data).view(np.uint8).ravel())
    counts = {}
    for info in f.tensors.values():
        counts[info.qtype] = counts.get(info.qtype, 0) + 1
    assert counts == {Q.Q4_1: 210, Q.F32: 61, Q.Q8_0: 1}
    m = G.read_gguf(REAL)
    assert m.config == {
        "vocab_size": 49152, "block_size": 8192, "n_layer": 30, "n_head": 9, "n_kv_head": 3,
        "n_embd": 576, "intermediate_size": 1536, "rms_norm_eps": float(np.float32(1e-5)),
        "rope_theta": 100000.0, "rope_interleaved": True, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2}
    n = sum(int(np.prod(w.shape)) for w in m.tensors.values())
    assert n == 134_515_008
    w = m.tensors["layers.3.mlp.down_proj.weight"]
    t = next(t for t in r.tensors if t.name == "blk.3.ffn_down.weight")
    np.testing.assert_array_equal(w.dequantize(), gguf.quants.dequantize(t.data, t.tensor_type))


def test_sentencepiece_vocabulary_reads_and_round_trips(tmp_path):
    from minillm.tokenizers.gguf_spm import GGUFSentencePieceTokenizer

    path, expect = write_tiny_gguf(tmp_path / "spm.gguf", tokenizer="llama")
    m = G.read_gguf(path)
    tok = m.tokenizer
    assert isinstance(tok, GGUFSentencePieceTokenizer) and tok.tokens == expect.tokens
    assert tok.add_bos is False and tok.add_space_prefix is True
    text = "The capital of France is Paris. 日本"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text)
    out = G.write_gguf(tmp_path / "spm2.gguf", m.config, m.tensors, tok, m.chat_template,
                       m.metadata, m.metadata_types)
    t2 = G.read_gguf(out).tokenizer
    assert (t2.tokens, t2.scores, t2.token_types) == (tok.tokens, tok.scores, tok.token_types)
    assert t2.encode(text) == ids


def test_unsupported_tokenizer_model_is_a_note(tmp_path):
    path, _ = write_tiny_gguf(tmp_path / "t.gguf")
    data = path.read_bytes()
    key = b"tokenizer.ggml.model"
    at = data.find(key) + len(key) + 4 + 8  # value type, string length
    assert data[at:at + 4] == b"gpt2"
    path.write_bytes(data[:at] + b"rwkv" + data[at + 4:])
    m = G.read_gguf(path)
    assert m.tokenizer is None and "'rwkv' is not supported" in m.tokenizer_note
    assert len(m.tensors) == 20


def test_a_failed_write_leaves_the_old_file(tiny, tmp_path, monkeypatch):
    m = G.read_gguf(tiny[0])
    target = tmp_path / "out" / "model.gguf"
    target.parent.mkdir()
    target.write_bytes(b"old")

    def boom(self, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(CheckpointError, match=r"could not write .*model.gguf \(disk full\)") as e:
        G.write_gguf(target, m.config, m.tensors, m.tokenizer)
    one_sentence(e)
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == [
        "model.gguf"]


@pytest.mark.slow
def test_real_weights_through_the_quantized_products():

    from minillm.kernels import reference as R
    from minillm.kernels import registry

    REAL = real_gguf()
    m = G.read_gguf(REAL)
    rng = np.random.default_rng(0)
    for p in ("layers.0.self_attn.q_proj.weight", "layers.29.mlp.down_proj.weight",
              "embed_tokens.weight"):
        qw = m.tensors[p]
        for N in (1, 5, 40):
            x = rng.standard_normal((N, qw.shape[1])).astype(np.float32)
            want = R.qmatmul_forward(x, qw)
            got = registry.get("qmatmul_forward", x)(x, qw)
            scale = float(np.abs(x).sum(axis=1).max() * np.abs(qw.rows(np.arange(64))).max())
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * scale, err_msg=p)
