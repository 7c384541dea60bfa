"""The sampler and generation API (minillm/sample.py) and the `sample` command (chat: test_chat*.py).

Generation is checked against a plain nanoGPT-style oracle (crop to the last block_size tokens,
full forward, argmax), the sampler against distributions computed here by hand.
"""

import re

import numpy as np
import pytest

import minillm as M
from minillm import sample as S
from minillm.cli import main
from minillm.errors import MinillmError
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer
from minillm.tokenizers.base import Tokenizer

CORPUS = "hello world, the quick brown fox jumps over the lazy dog!\nUser: Assistant:\n"


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.from_text(CORPUS)


def make_model(tok_or_vocab, block_size=16, seed=0):
    """A tiny random GPT whose weights are large enough (std 0.5) that greedy text varies
    instead of repeating one character, and whose logits depend on position."""
    V = tok_or_vocab if isinstance(tok_or_vocab, int) else tok_or_vocab.vocab_size
    M.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    rng = np.random.default_rng(seed)
    for _, p in m.named_parameters():
        if p.data.ndim == 2:
            p.data = (rng.standard_normal(p.shape) * 0.5).astype(np.float32)
    return m.eval()


@pytest.fixture(scope="module")
def model(tok):
    return make_model(tok)


def oracle_greedy(model, ids, n, eos=None, penalty=1.0):
    """nanoGPT's loop: crop to the last block_size ids, full forward, (penalised) argmax."""
    ids, block, out = list(ids), model.config.block_size, []
    with M.no_grad():
        for _ in range(n):
            logits = model(np.array([ids[-block:]]))[0].numpy()[0, -1].astype(np.float64)
            seen = np.unique(ids)
            hit = logits[seen]
            logits[seen] = np.where(hit > 0, hit / penalty, hit * penalty)
            nxt = int(np.argmax(logits))
            if nxt == eos:
                break
            ids.append(nxt)
            out.append(nxt)
    return out


# ----------------------------------------------------------------------------- greedy, cache
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("prompt", ["the quick", "hello world, the quick brown fox"])
def test_greedy_matches_oracle_including_window_slide(model, tok, prompt, use_cache):
    # the second prompt (32 chars) is longer than block_size 16: the window slides from step 1;
    # 30 new tokens from "the quick" (9) cross block_size during generation
    want = tok.decode(oracle_greedy(model, tok.encode(prompt), 30, eos=tok.eos_id))
    got = S.generate(model, tok, prompt, max_new_tokens=30, greedy=True, use_cache=use_cache)
    assert got == want
    assert len(got) > 10 and len(set(got)) > 3  # a real, varied text, not a trivial one


def _recorded_logits(monkeypatch, model, tok, prompt, n, use_cache):
    seen = []
    real = S.sample_next

    def spy(logits, *a, **k):
        seen.append(np.array(logits))
        return real(logits, *a, **k)

    monkeypatch.setattr(S, "sample_next", spy)
    S.generate(model, tok, prompt, max_new_tokens=n, greedy=True, use_cache=use_cache)
    monkeypatch.setattr(S, "sample_next", real)
    return seen


def test_cache_and_no_cache_logits_agree_at_every_step(monkeypatch, model, tok):
    # 5 prompt tokens + 25 steps: 11 steps inside the window, then 14 with the window sliding
    with_cache = _recorded_logits(monkeypatch, model, tok, "hello", 25, True)
    without = _recorded_logits(monkeypatch, model, tok, "hello", 25, False)
    assert len(with_cache) == len(without) == 25
    for step, (a, b) in enumerate(zip(with_cache, without)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"step {step}")


def test_kv_cache_costs_one_position_per_token(monkeypatch, model, tok):
    widths = []
    real = GPT.forward

    def spy(self, idx, *a, **k):
        widths.append(np.asarray(idx).shape[1])
        return real(self, idx, *a, **k)

    monkeypatch.setattr(GPT, "forward", spy)
    S.generate(model, tok, "hello", max_new_tokens=8, greedy=True)
    assert widths == [5] + [1] * 7  # prefill of the prompt, then (B, 1) steps


def test_greedy_temperature_zero_and_top_k_one_agree(model, tok):
    kw = dict(max_new_tokens=20)
    greedy = S.generate(model, tok, "fox", greedy=True, **kw)
    assert greedy == S.generate(model, tok, "fox", greedy=True, **kw)  # deterministic
    assert S.generate(model, tok, "fox", temperature=0.0, seed=1, **kw) == greedy
    assert S.generate(model, tok, "fox", top_k=1, temperature=1.5, seed=2, **kw) == greedy


def test_seeds_repeat_and_differ(model, tok):
    kw = dict(max_new_tokens=40, temperature=1.5)
    a = S.generate(model, tok, "the", seed=7, **kw)
    assert a == S.generate(model, tok, "the", seed=7, **kw)
    assert a != S.generate(model, tok, "the", seed=8, **kw)


def test_repetition_penalty_matches_hf_formula(model, tok):
    want = tok.decode(oracle_greedy(model, tok.encode("the lazy"), 20, tok.eos_id, penalty=1.8))
    got = S.generate(model, tok, "the lazy", max_new_tokens=20, greedy=True,
                     repetition_penalty=1.8)
    assert got == want != S.generate(model, tok, "the lazy", max_new_tokens=20, greedy=True)
    logits = np.array([[2.0, -2.0, 3.0]])
    out = S.apply_repetition_penalty(logits, np.array([[True, True, False]]), 2.0)
    np.testing.assert_array_equal(out, [[1.0, -4.0, 3.0]])


# ----------------------------------------------------------------------------- stopping
def test_stop_string_ends_generation_and_is_excluded(model, tok):
    kw = dict(max_new_tokens=40, temperature=1.2, seed=3)
    full = S.generate(model, tok, "hello", **kw)
    stop = full[12:14]  # a string that does occur; generation must end at its first occurrence
    cut = full.find(stop)
    assert S.generate(model, tok, "hello", stop=stop, **kw) == full[:cut]
    assert S.generate(model, tok, "hello", stop=["@never@", stop], **kw) == full[:cut]
    assert S.generate(model, tok, "hello", stop="not in it", **kw) == full


def test_eos_stops_generation(monkeypatch, model, tok):
    calls, real = [], S.sample_next

    def eos_at_step_4(logits, *a, **k):  # the model "chooses" eos at the 5th step
        calls.append(1)
        ids = real(logits, *a, **k)
        return np.full_like(ids, tok.eos_id) if len(calls) == 5 else ids

    full = S.generate(model, tok, "hello", max_new_tokens=20, greedy=True)
    monkeypatch.setattr(S, "sample_next", eos_at_step_4)
    got = S.generate(model, tok, "hello", max_new_tokens=20, greedy=True)
    assert got == full[:4] and len(calls) == 5  # eos is not in the text; nothing after it


def test_empty_prompt_starts_from_bos(model, tok):
    want = tok.decode(oracle_greedy(model, [tok.bos_id], 10, eos=tok.eos_id))
    assert S.generate(model, tok, "", max_new_tokens=10, greedy=True) == want


def test_max_new_tokens_zero(model, tok):
    assert S.generate(model, tok, "hello", max_new_tokens=0) == ""


# ----------------------------------------------------------------------------- distribution
def _expected_probs(logits, T, k, p):
    """By hand: softmax(logits / T) over the k largest, then the smallest prefix reaching p."""
    order = np.argsort(-logits)[:k]
    q = np.exp(logits[order] / T - (logits[order] / T).max())
    q /= q.sum()
    n = 1
    while n < len(q) and q[:n].sum() < p:
        n += 1
    out = np.zeros_like(logits, dtype=np.float64)
    out[order[:n]] = q[:n] / q[:n].sum()
    return out


@pytest.mark.parametrize("T,k,p", [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8),
                                   (0.9, 6, 0.9)])
def test_sampled_frequencies_match_filtered_softmax(T, k, p):
    logits = np.array([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0, 0.9, 1.1])
    want = _expected_probs(logits, T, k or 10, p or 1.0)
    np.testing.assert_allclose(S.filter_probs(logits, T, k, p), want, atol=1e-12)
    rng = np.random.default_rng(0)
    n = 20000
    draws = S.sample_next(np.tile(logits, (n, 1)), rng, T, k, p)  # (n,) one draw per row
    counts = np.bincount(draws, minlength=10)
    assert counts[want == 0].sum() == 0  # filtered tokens are never drawn
    kept = want > 0
    chi2 = (((counts[kept] - n * want[kept]) ** 2) / (n * want[kept])).sum()
    assert chi2 < 30.0  # dof <= 9: the 99.95% quantile is about 29.7


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    kept = lambda p: np.flatnonzero(S.filter_probs(logits, 1.0, None, p)).tolist()  # noqa: E731
    assert kept(0.4) == [0]  # at least one token, even when it alone exceeds p
    assert kept(0.75) == [0, 1]
    assert kept(0.85) == [0, 1, 2]
    assert kept(1.0) == [0, 1, 2, 3]
    np.testing.assert_allclose(S.filter_probs(logits, 1.0, None, 0.75), [0.625, 0.375, 0, 0])


# ----------------------------------------------------------------------------- streaming
class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, plus eos 256: one character may take several tokens."""

    kind = "bytes-test"
    eos_id = bos_id = 256

    @property
    def vocab_size(self):
        return 257

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def _save_data(self, directory):
        return {}

    @classmethod
    def _from_data(cls, data, directory):
        return cls()


def test_stream_yields_what_generate_returns(model, tok):
    kw = dict(max_new_tokens=40, temperature=1.2, seed=3)
    full = S.generate(model, tok, "hello", **kw)
    pieces = list(S.stream(model, tok, "hello", **kw))
    assert len(full) == 40 and len(pieces) > 5 and "".join(pieces) == full
    stop = full[20:23]  # a stop string that occurs: held back while it might be starting
    pieces = list(S.stream(model, tok, "hello", stop=stop, **kw))
    assert "".join(pieces) == full[: full.find(stop)] == S.generate(model, tok, "hello",
                                                                     stop=stop, **kw)
    assert not any(stop in p for p in pieces)


def test_stream_never_splits_a_multibyte_character(monkeypatch):
    tok = ByteTokenizer()
    m = make_model(257, block_size=32)
    # script the sampled bytes: "a", "é" (c3 a9), "€" (e2 82 ac), an invalid byte ff, "b"
    script = iter([0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xFF, 0x62])
    monkeypatch.setattr(S, "sample_next",
                        lambda logits, *a, **k: np.array([next(script)] * len(logits)))
    pieces = list(S.stream(m, tok, "x", max_new_tokens=8))
    # nothing comes out while a character is incomplete; the invalid byte stays U+FFFD
    assert pieces == ["a", "é", "€", "\ufffdb"]


# ----------------------------------------------------------------------------- batches
@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_prompts_match_one_by_one(model, tok, use_cache):
    # lengths 1, 3, 11, 0 (bos) and 20 (> block_size 16): left padding, masks, position ids and
    # the sliding window all take part
    prompts = ["h", "fox", "hello world", "", "the quick brown fox "]
    batched = S.generate(model, tok, prompts, max_new_tokens=12, greedy=True,
                         use_cache=use_cache)
    alone = [S.generate(model, tok, p, max_new_tokens=12, greedy=True, use_cache=use_cache)
             for p in prompts]
    assert batched == alone
    assert sum(map(len, batched)) > 30


def test_batched_sampling_is_seeded(model, tok):
    kw = dict(max_new_tokens=15, temperature=1.0, seed=11)
    a = S.generate(model, tok, ["ab", "hello"], **kw)
    assert a == S.generate(model, tok, ["ab", "hello"], **kw) and a[0] != a[1]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,msg", [
    (dict(prompt="hello ~"), "cannot encode the prompt"),
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"),
    (dict(top_k=0), "top_k must be a whole number >= 1"),
    (dict(max_new_tokens=-1), "max_new_tokens must be a whole number >= 0"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
    (dict(stop=""), "stop sequence must be a non-empty string"),
])
def test_bad_input_is_one_sentence(model, tok, kw, msg):
    kw = dict(kw)
    prompt = kw.pop("prompt", "hello")
    with pytest.raises(MinillmError, match=re.escape(msg)):
        S.generate(model, tok, prompt, **kw)
    with pytest.raises(MinillmError):
        list(S.stream(model, tok, prompt, **kw))


def test_model_mode_is_restored(model, tok):
    model.train()
    S.generate(model, tok, "hi", max_new_tokens=2)
    assert model.training
    model.eval()


def test_lazy_top_level_api(model, tok):
    want = S.generate(model, tok, "fox", max_new_tokens=5, greedy=True)
    assert M.generate(model, tok, "fox", max_new_tokens=5, greedy=True) == want
    assert "".join(M.stream(model, tok, "fox", max_new_tokens=5, greedy=True)) == want


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model, tok):
    from minillm.checkpoints.run import save

    d = tmp_path_factory.mktemp("ckpt") / "model"
    save(d, model, tokenizer=tok)
    return d


def test_cli_sample_prints_samples(ckpt, model, tok, capsys, tmp_path):
    (tmp_path / "p.txt").write_text("the", encoding="utf-8")
    argv = ["sample", "--ckpt", str(ckpt), "--prompt", f"FILE:{tmp_path / 'p.txt'}",
            "--num-samples", "2", "--max-new-tokens", "12", "--seed", "4", "--top-k", "0",
            "--temperature", "1.0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    want = [S.generate(model, tok, "the", max_new_tokens=12, temperature=1.0, seed=s)
            for s in (4, 5)]  # sample i uses seed + i
    assert out == "".join(f"the{w}\n---------------\n" for w in want)


def test_cli_sample_missing_checkpoint(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and "Traceback" not in err


def test_cli_sample_bad_option(ckpt, capsys):
    assert main(["sample", "--ckpt", str(ckpt), "--top-p", "2"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err


def test_padded_model_vocabulary_never_yields_undecodable_ids(tok):
    # nanoGPT pads GPT-2's vocabulary to 50304: ids past the tokenizer's must never be drawn
    m = make_model(tok.vocab_size + 40)
    text = S.generate(m, tok, "the", max_new_tokens=150, temperature=3.0, seed=0)
    assert len(text) > 20  # (decode would raise on an id outside the tokenizer)
    with pytest.raises(MinillmError, match="do not belong together"):
        S.generate(make_model(tok.vocab_size - 1), tok, "the", max_new_tokens=3)


def test_text_tracker_grows_by_bytes_as_a_full_decode_would():
    # a byte-level BPE's text grows by each new id's bytes; pieces, holds and stops must be
    # those of decoding every id again (the path of tokenizers whose pieces do not join)
    import random

    from minillm.tokenizers.bpe import BYTE_TO_UNICODE, ByteLevelBPETokenizer

    vocab = {BYTE_TO_UNICODE[b]: b for b in range(256)}
    vocab.update({"<|end|>": 256, BYTE_TO_UNICODE[0xC3] + BYTE_TO_UNICODE[0xA9]: 257})  # "é"
    tok = ByteLevelBPETokenizer(vocab, [(BYTE_TO_UNICODE[0xC3], BYTE_TO_UNICODE[0xA9])],
                                special={"<|end|>": 256}, control=[256], eos_id=256)
    assert tok.bytes_join

    class Whole:  # the same tokenizer, seen as one whose bytes do not join
        bytes_join = False

        def decode(self, ids):
            return tok.decode(ids)

    rng = random.Random(0)
    alphabet = [0x61, 0x62, 0x20, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xFF, 256, 257]
    for trial in range(200):
        stops = rng.choice([[], ["ab"], ["é b", "\u20ac"], ["b a", "aa"]])
        fast, slow = S._TextTracker(tok, stops), S._TextTracker(Whole(), stops)
        assert fast.raw is not None and slow.raw is None
        for t in (rng.choice(alphabet) for _ in range(rng.randint(1, 30))):
            assert fast.push(t) == slow.push(t), (trial, fast.ids)
            assert fast.done == slow.done
            if fast.done:
                break
        assert fast.finish() == slow.finish() and fast.emitted == slow.emitted
