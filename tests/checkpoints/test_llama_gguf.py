"""minillm.load on a Llama GGUF file: the model holds the file's weights (quantized ones stay in
their blocks), answers as the float32 model does, and chats through the file's template."""

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm
from minillm.chat import TemplateChat
from minillm.checkpoints.gguf import read_gguf, write_gguf
from minillm.checkpoints.llama import build_llama
from minillm.errors import ConfigError
from minillm.kernels.quant import QuantWeight
from minillm.nn.quant import QuantEmbedding, QuantLinear, named_quant_weights
from minillm.tokenizers.chat_template import ChatTemplate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=5)


def logits(model, ids):
    out, _ = model(np.asarray([ids]))
    return np.asarray(out.data, dtype=np.float64)[0]


IDS = [1, 40, 77, 12, 200, 5, 9, 31, 33, 100, 7]


@pytest.mark.parametrize("tie", [True, False])
def test_stored_weights_stay_quantized_and_give_the_float32_models_logits(tmp_path, tie):
    path, expect = write_tiny_gguf(tmp_path / "m.gguf", tie=tie, seed=2)
    quant, tok = minillm.load(path)  # dtype "stored"
    plain, _ = minillm.load(path, dtype="float32")
    assert not quant.training and tok.chat_template == expect.chat_template
    kinds = {type(m).__name__ for m in quant.modules()}
    assert {"QuantLinear", "QuantEmbedding"} <= kinds
    stored = dict(named_quant_weights(quant))
    assert "layers.0.self_attn.q_proj.weight" in stored  # Q4_1 blocks, as in the file
    assert stored["layers.0.self_attn.q_proj.weight"].qtype == 3
    if tie:  # the tied head reads the table's blocks: held once
        assert quant.lm_head.weight is quant.embed_tokens.weight
    for name, w in expect.weights.items():  # what the float model holds is the file's data
        got = dict(plain.named_parameters())[name].data
        np.testing.assert_array_equal(got, w)
    np.testing.assert_allclose(logits(quant, IDS), logits(plain, IDS), rtol=1e-5, atol=1e-5)
    # a quantized model fills its cache in short chunks; the float32 one in llama.cpp's 512
    assert (quant.prefill_chunk, plain.prefill_chunk) == (128, 512)


def test_q8_0_requantizes_every_matrix(tiny):
    path, _ = tiny
    model, _ = minillm.load(path, dtype="q8_0")
    qs = [m.weight for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding))]
    assert qs and all(w.qtype == 8 for w in qs)


def test_reading_builds_without_random_draws_and_refuses_options(tiny):
    path, _ = tiny
    state = minillm.backend.get_rng_state()
    minillm.load(path)
    assert str(minillm.backend.get_rng_state()) == str(state)
    with pytest.raises(ConfigError, match="takes no option quantize"):
        minillm.load(path, quantize="q4")


def test_read_write_read_is_bit_identical(tiny, tmp_path):
    path, _ = tiny
    g = read_gguf(path)
    out = write_gguf(tmp_path / "again.gguf", g.config, g.tensors, g.tokenizer, g.chat_template,
                     metadata=g.metadata, metadata_types=g.metadata_types)
    h = read_gguf(out)
    assert h.config == g.config and h.chat_template == g.chat_template
    for name, w in g.tensors.items():
        v = h.tensors[name]
        if isinstance(w, QuantWeight):
            assert v.qtype == w.qtype and np.array_equal(v.blocks, w.blocks)
        else:
            np.testing.assert_array_equal(v, w)
    model = build_llama(h.config, h.tensors)
    np.testing.assert_array_equal(logits(model, IDS), logits(minillm.load(path)[0], IDS))


def test_build_can_consume_the_tensors_it_places(tiny):
    # the loader hands its dict over (consume=True): emptied as the weights are placed, so no
    # second reference keeps the pre-fusion q, k, v / gate, up arrays alive; same model
    path, _ = tiny
    kept, given = read_gguf(path).tensors, read_gguf(path).tensors
    a, b = build_llama(read_gguf(path).config, kept), build_llama(read_gguf(path).config, given,
                                                                  consume=True)
    assert given == {} and len(kept) > 0
    np.testing.assert_array_equal(logits(a, IDS), logits(b, IDS))


def test_kv_cache_decoding_matches_the_full_forward(tiny):
    path, _ = tiny
    model, _ = minillm.load(path)
    full = logits(model, IDS)
    cache = model.new_kv_cache(1, max_len=len(IDS))
    first, _ = model(np.asarray([IDS[:6]]), kv_cache=cache)
    steps = [np.asarray(first.data)[0]]
    for t in IDS[6:]:
        out, _ = model(np.asarray([[t]]), kv_cache=cache)
        steps.append(np.asarray(out.data)[0])
    np.testing.assert_allclose(np.concatenate(steps), full, rtol=1e-4, atol=1e-4)


def test_chat_through_the_files_template(tiny):
    path, expect = tiny
    model, tok = minillm.load(path)
    template = ChatTemplate(tok.chat_template)
    chat = TemplateChat(model, tok, template.render, stop_ids=[2], greedy=True,
                        max_new_tokens=6)
    reply = "".join(chat.send("What is the capital of France?"))
    prompt = template.render([{"role": "user", "content": "What is the capital of France?"}],
                             add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n") and tok.encode(prompt)[0] == 1
    ids = tok.encode(prompt)
    expected = []
    for _ in range(6):  # greedy by hand, no cache
        nxt = int(np.argmax(logits(model, ids + expected)[-1][: tok.vocab_size]))
        if nxt == 2:
            break
        expected.append(nxt)
    assert reply == tok.decode(expected)


def test_cli_chat_and_sample_on_a_gguf_file(tiny, monkeypatch, capsys):
    import io
    import sys

    from minillm.cli import main

    path, _ = tiny
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\n/temp 0.5\n"
                                                  "Hello again\n"))
    assert main(["chat", "--ckpt", str(path), "--greedy", "--max-new-tokens", "5",
                 "--system", "Be brief."]) == 0
    out = capsys.readouterr().out.splitlines()
    model, tok = minillm.load(path)
    chat = TemplateChat.for_model(model, tok, system="Be brief.", greedy=True, max_new_tokens=5)
    assert out[0] == "".join(chat.send("What is the capital of France?"))
    assert out[1] == "(temperature = 0.5)" and len(out) == 3
    assert main(["sample", "--ckpt", str(path), "--dtype", "float32", "--prompt", "The fox",
                 "--greedy", "--max-new-tokens", "4"]) == 0
    plain, _ = minillm.load(path, dtype="float32")
    text = minillm.generate(plain, tok, "The fox", greedy=True, max_new_tokens=4)
    assert capsys.readouterr().out == "The fox" + text + "\n---------------\n"


@pytest.mark.slow
def test_the_builtin_model_answers_paris(monkeypatch, capsys):
    """The real SmolLM2-135M-Instruct (fetched once), Q4_1 as stored, greedy: the float32
    model's answer, which llama.cpp's 8-bit activations change (shared/REAL_LLM_NOTES.md)."""
    import io
    import sys

    from minillm.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\n"))
    assert main(["chat", "--greedy", "--max-new-tokens", "30"]) == 0
    assert "Paris" in capsys.readouterr().out
    model, tok = minillm.load("smollm2-135m-instruct")
    assert tok.encode("12345") == [tok.token_id(d) for d in "12345"]  # digits one by one
    c = model.config
    assert (c.n_layer, c.n_head, c.n_kv_head, c.n_embd, c.vocab_size) == (30, 9, 3, 576, 49152)
