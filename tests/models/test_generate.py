"""model.generate with Hugging Face's keywords and semantics, for GPT and Llama (DecoderLM's
method), and minillm.generate's token-id input, max_length, do_sample, num_return_sequences and
CLI defaults."""

import inspect

import numpy as np
import pytest

import minillm as M
from minillm import sample as S
from minillm.cli import _parser as build_parser
from minillm.errors import MinillmError
from minillm.models import GPT, GPTConfig, Llama, LlamaConfig
from minillm.tokenizers import CharTokenizer

CORPUS = "hello world, the quick brown fox jumps over the lazy dog!\n"


def gpt(block_size=24, seed=0):
    M.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=40, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    rng = np.random.default_rng(seed)
    for p in m.parameters():  # large weights: greedy text varies with the context
        if p.ndim == 2:
            p.data = (rng.standard_normal(p.shape) * 0.5).astype(np.float32)
    return m.eval()


def llama(eos=None):
    m = Llama(LlamaConfig(vocab_size=40, block_size=24, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=32, intermediate_size=48, eos_token_id=eos), init=False)
    rng = np.random.default_rng(1)
    for p in m.parameters():
        p.data = ((1 + 0.2 * rng.standard_normal(p.shape)) if p.ndim == 1 else
                  rng.standard_normal(p.shape) * 0.3).astype(np.float32)
    return m.eval()


def greedy_oracle(model, ids, n):
    """nanoGPT's loop: crop to block_size, full forward, argmax."""
    ids, block = list(ids), model.config.block_size
    with M.no_grad():
        for _ in range(n):
            logits = model(np.array([ids[-block:]]))[0].numpy()[0, -1]
            ids.append(int(np.argmax(logits)))
    return ids


@pytest.mark.parametrize("make", [gpt, llama])
def test_greedy_matches_the_oracle_for_every_input_form(make):
    model = make()
    prompt = [3, 1, 4, 1, 5]
    want = np.array([greedy_oracle(model, prompt, 8)])
    for form in (prompt, np.array(prompt), np.array([prompt]), M.tensor(prompt),
                 M.tensor([prompt])):
        got = model.generate(form, max_new_tokens=8)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    # past the context window it slides, as the oracle crops
    np.testing.assert_array_equal(model.generate(prompt, max_new_tokens=25),
                                  [greedy_oracle(model, prompt, 25)])


def test_max_length_counts_the_input_and_defaults_to_20():
    model = gpt()
    assert model.generate([1, 2, 3], max_length=10).shape == (1, 10)
    assert model.generate([1, 2, 3]).shape == (1, 20)  # Hugging Face's default max_length
    assert model.generate([1, 2, 3], max_length=10, max_new_tokens=2).shape == (1, 5)
    with pytest.raises(MinillmError, match="max_length"):
        model.generate([1, 2, 3], max_length=3)


def test_sampling_num_return_sequences_and_seeds():
    model = gpt()
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    out = model.generate(ids, do_sample=True, max_new_tokens=6, num_return_sequences=3,
                         seed=0, temperature=1.5)
    assert out.shape == (6, 9)
    np.testing.assert_array_equal(out[:3, :3], np.repeat(ids[:1], 3, axis=0))  # row 0 x3, then row 1
    np.testing.assert_array_equal(out[3:, :3], np.repeat(ids[1:], 3, axis=0))
    assert len({tuple(r) for r in out[:3]}) > 1  # the copies are sampled independently
    np.testing.assert_array_equal(out, model.generate(ids, do_sample=True, max_new_tokens=6,
                                                      num_return_sequences=3, seed=0,
                                                      temperature=1.5))
    M.manual_seed(5)  # without a seed, minillm's generator decides (torch.manual_seed's habit)
    a = model.generate(ids, do_sample=True, max_new_tokens=6)
    M.manual_seed(5)
    np.testing.assert_array_equal(a, model.generate(ids, do_sample=True, max_new_tokens=6))
    with pytest.raises(MinillmError, match="do_sample"):
        model.generate(ids, num_return_sequences=2)  # greedy gives one sequence per input


def test_eos_ends_rows_and_pads_them():
    model = gpt()
    free = model.generate([[1, 2, 3], [7, 8, 9]], max_new_tokens=6)
    eos = int(free[0, 4])  # row 0's second new token
    out = model.generate([[1, 2, 3], [7, 8, 9]], max_new_tokens=6, eos_token_id=eos,
                         pad_token_id=0)
    first = int(np.flatnonzero(free[0, 3:] == eos)[0]) + 3
    np.testing.assert_array_equal(out[0, :first + 1], free[0, :first + 1])  # eos is kept
    assert (out[0, first + 1:] == 0).all()  # then padding
    hits = np.flatnonzero(free[1, 3:] == eos)
    if not len(hits):
        np.testing.assert_array_equal(out[1], free[1])
    # every row finished: generation stops there
    alone = model.generate([1, 2, 3], max_new_tokens=6, eos_token_id=eos)
    assert alone.shape == (1, first + 1) and alone[0, -1] == eos


def test_llama_takes_eos_from_its_config():
    model = llama()
    free = model.generate([5, 6, 7], max_new_tokens=6)
    eos = int(free[0, 3])
    out = llama(eos=eos).generate([5, 6, 7], max_new_tokens=6)
    np.testing.assert_array_equal(out, free[:, :4])


def test_left_padded_batch_with_attention_mask_equals_each_row_alone():
    model = gpt()
    rows = [[1, 2, 3, 4, 5], [9, 8]]
    ids = np.array([[1, 2, 3, 4, 5], [0, 0, 0, 9, 8]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=5)
    for b, r in enumerate(rows):
        np.testing.assert_array_equal(out[b, -5:], model.generate(r, max_new_tokens=5)[0, -5:])
    with pytest.raises(MinillmError, match="left"):
        model.generate(ids, attention_mask=mask[:, ::-1].copy(), max_new_tokens=2)
    with pytest.raises(MinillmError, match="different lengths"):
        model.generate(rows, max_new_tokens=2)


# ----------------------------------------------------------------------------- minillm.generate
@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.from_text(CORPUS)


def test_minillm_generate_takes_token_ids(tok):
    model = gpt()
    ids = tok.encode("the fox")
    out = M.generate(model, tok, ids, max_new_tokens=6, do_sample=False)
    assert isinstance(out, np.ndarray) and out.shape[0] == 1
    text = M.generate(model, tok, "the fox", max_new_tokens=6, greedy=True)
    assert tok.decode(out[0, len(ids):]) == text
    np.testing.assert_array_equal(M.generate(model, None, ids, max_new_tokens=6, greedy=True),
                                  model.generate(ids, max_new_tokens=6))
    assert M.generate(model, tok, ids, max_length=10, greedy=True).shape[1] <= 10


def test_minillm_generate_max_length_do_sample_num_return_sequences(tok):
    model = gpt()
    a = M.generate(model, tok, "the", max_length=9, do_sample=False)
    assert a == M.generate(model, tok, "the", max_new_tokens=6, greedy=True)
    texts = M.generate(model, tok, "the", max_new_tokens=8, num_return_sequences=3, seed=1,
                       temperature=1.5)
    assert isinstance(texts, list) and len(texts) == 3 and len(set(texts)) > 1
    both = M.generate(model, tok, ["the", "fox"], max_new_tokens=4, num_return_sequences=2,
                      seed=1)
    assert [len(x) for x in both] == [2, 2]
    with pytest.raises(MinillmError):
        M.generate(model, tok, "the", greedy=True, do_sample=True)
    with pytest.raises(MinillmError):
        M.generate(model, tok, "the", do_sample=False, num_return_sequences=2)


def test_minillm_generate_defaults_are_the_clis():
    args = build_parser().parse_args(["sample", "--ckpt", "x"])
    sig = inspect.signature(S.generate).parameters
    assert sig["temperature"].default == args.temperature == S.TEMPERATURE
    assert sig["top_k"].default == args.top_k == S.TOP_K
    assert args.max_new_tokens == S.MAX_NEW_TOKENS
    assert inspect.signature(S.stream).parameters["max_new_tokens"].default == S.MAX_NEW_TOKENS


def test_generate_takes_a_tokenizer_call_as_hugging_face_users_write_it(tok):
    model = gpt()
    enc = tok(["the fox", "a dog jumps"], padding=True, return_tensors="np")
    out = model.generate(**enc, max_new_tokens=4)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:])
    assert texts == [M.generate(model, tok, p, max_new_tokens=4, greedy=True)
                     for p in ("the fox", "a dog jumps")]
