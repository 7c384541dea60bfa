"""The serving engine: the ragged KV cache gives each row its solo logits (GPT and Llama), and
continuous batching gives each request the text it gets alone."""

import queue
import threading
import time

import numpy as np
import pytest
from recording_model import Recording

import minillm
from minillm import backend
from minillm.autograd import no_grad
from minillm.errors import MinillmError
from minillm.models import GPT, GPTConfig
from minillm.models.llama import Llama, LlamaConfig
from minillm.serve.engine import Engine, QueueFull, SamplingParams
from minillm.serve.kvcache import RaggedKVCache
from minillm.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyz .,\n"


def _gpt(V, seed=0):
    backend.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=96, n_layer=2, n_head=2, n_embd=32,
                         initializer_range=0.3)).eval()


def _llama(V, n_kv_head, seed=0):
    backend.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=V, block_size=96, n_layer=2, n_head=4,
                             n_kv_head=n_kv_head, n_embd=32, intermediate_size=48,
                             initializer_range=0.3)).eval()


def _solo_logits(model, ids):
    """Logits (V,) after ``ids``: a batch-1 cached prefill of all but the last, then one step."""
    cache = model.new_kv_cache(1, max_len=len(ids))
    with no_grad():
        model(np.asarray([ids[:-1]]), kv_cache=cache)
        logits, _ = model(np.asarray([ids[-1:]]), kv_cache=cache)
    return logits.data[0, -1]


@pytest.mark.parametrize("make", [lambda V: _gpt(V), lambda V: _llama(V, 2),
                                  lambda V: _llama(V, 4)], ids=["gpt", "llama-gqa", "llama-mha"])
def test_each_ragged_row_gets_its_solo_logits(make, monkeypatch):
    V = 23
    model = make(V)
    import minillm.nn.llama

    def composite(*a):  # a ragged cache's mask is a prefix per row: Llama's kernel path
        raise AssertionError("the masked composite ran")

    monkeypatch.setattr(minillm.nn.llama, "_masked_attention", composite)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, V, n).tolist() for n in (5, 1, 12)]  # ragged lengths
    cache = RaggedKVCache.for_model(model, rows=4)
    for row, ids in enumerate(prompts):  # prefill each alone, as the engine does
        c = model.new_kv_cache(1, max_len=len(ids))
        with no_grad():
            model(np.asarray([ids]), kv_cache=c)
        cache.load_row(row, c, len(ids))
    for step in range(3):  # three decode steps, every row one new token at its own position
        new = rng.integers(0, V, len(prompts)).tolist()
        mask, pos = cache.step_inputs(len(prompts))
        assert pos[:, 0].tolist() == [len(p) for p in prompts]
        with no_grad():
            logits, _ = model(np.asarray(new)[:, None], kv_cache=cache, attention_mask=mask,
                              position_ids=pos)
        for row, ids in enumerate(prompts):
            ids.append(new[row])
            want = _solo_logits(model, ids)
            np.testing.assert_allclose(logits.data[row, -1], want, rtol=1e-5, atol=1e-5)
    assert cache.lengths[:3].tolist() == [len(p) for p in prompts]
    # the middle row leaves; the last takes its place and still decodes as itself
    cache.move_row(2, 1)
    prompts.pop(1)
    new = [3, 7]
    mask, pos = cache.step_inputs(2)
    with no_grad():
        logits, _ = model(np.asarray(new)[:, None], kv_cache=cache, attention_mask=mask,
                          position_ids=pos)
    for row, ids in enumerate(prompts):
        ids.append(new[row])
        np.testing.assert_allclose(logits.data[row, -1], _solo_logits(model, ids), rtol=1e-5,
                                   atol=1e-5)


def _collect(engine, prompt_ids, params):
    """Submit and wait; return (token ids, text, finish reason)."""
    events = queue.Queue()
    engine.submit(prompt_ids, params, lambda kind, payload: events.put((kind, payload)))
    ids, text = [], ""
    while True:
        kind, payload = events.get(timeout=60)
        if kind == "token":
            ids.append(payload.id)
            text += payload.text
        elif kind == "done":
            return ids, text, payload[0]
        elif kind == "error":
            raise AssertionError(payload)


@pytest.fixture(scope="module")
def tiny():
    tok = CharTokenizer.from_text(TEXT)
    return _gpt(tok.vocab_size, seed=5), tok


def _llama_q8(V, seed=5):
    """A Llama whose layers hold Q4_1 row groups and round their inputs to Q8_0 (the
    VNNI kernel's path where the CPU has it): batching must still give each row its text."""
    from minillm.nn.quant import quantize_linears, set_activations

    backend.manual_seed(seed)
    model = Llama(LlamaConfig(vocab_size=V, block_size=96, n_layer=2, n_head=4, n_kv_head=2,
                              n_embd=64, intermediate_size=96, initializer_range=0.3)).eval()
    assert len(quantize_linears(model, "q4_1")) == 14  # 7 a layer; the head stays float
    assert set_activations(model, "q8_0") == 14
    return model


@pytest.fixture(scope="module", params=["gpt", "llama-gqa", "llama-q8"])
def tiny_any(request, tiny):
    model, tok = tiny
    if request.param == "llama-gqa":
        model = _llama(tok.vocab_size, 2, seed=5)
    elif request.param == "llama-q8":
        model = _llama_q8(tok.vocab_size)
    return model, tok


def test_concurrent_requests_get_their_solo_text(tiny_any):
    model, tok = tiny_any
    prompts = ["the cat", "a", "hello world, and", "xyz", "q", "more text here", "ab", "zz top"]
    want = [minillm.generate(model, tok, p, max_new_tokens=n, greedy=True)
            for p, n in zip(prompts, range(10, 18))]
    engine = Engine(model, tok, max_batch=3, queue_size=16).start()  # fewer rows than requests
    try:
        got = [None] * len(prompts)

        def client(i):
            params = SamplingParams(max_tokens=10 + i, temperature=0.0,
                                    stop_ids=frozenset([tok.eos_id]))
            got[i] = _collect(engine, tok.encode(prompts[i]), params)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.close()
    for (ids, text, reason), w, i in zip(got, want, range(len(prompts))):
        assert text == w
        assert reason == ("length" if len(ids) == 10 + i else "stop")


def test_requests_waiting_together_are_prefilled_in_one_pass(tiny_any):
    model, tok = tiny_any
    prompts = ["the cat sat on", "a", "hello world", "a", "xyz.", "q q q q q q q", "a",
               "hello world"]  # 5 distinct
    want = [minillm.generate(model, tok, p, max_new_tokens=9, greedy=True) for p in prompts]
    rec = Recording(model)
    engine = Engine(rec, tok, max_batch=8)
    sinks = [queue.Queue() for _ in prompts]
    for p, q in zip(prompts, sinks):  # all waiting before the loop starts
        engine.submit(tok.encode(p), SamplingParams(max_tokens=9, temperature=0.0,
                                                    stop_ids=frozenset([tok.eos_id])),
                      lambda kind, x, q=q: q.put((kind, x)))
    engine.start()
    try:
        for q, w in zip(sinks, want):
            text = ""
            while True:
                kind, x = q.get(timeout=60)
                if kind == "done":
                    break
                assert kind == "token", x
                text += x.text
            assert text == w
    finally:
        engine.close()
    # one prefill, each distinct prompt once: packed end to end (Llama) or right-padded (GPT)
    distinct = [tok.encode(p) for p in dict.fromkeys(prompts)]
    packed = hasattr(model, "prefill_packed")
    assert rec.shapes[0] == (len(distinct), sum(map(len, distinct)) if packed else
                             max(map(len, distinct)))
    assert all(s[1] == 1 for s in rec.shapes[1:])  # then decode steps only


def test_an_idle_engine_waits_for_requests_that_arrive_together(tiny_any):
    # the second request comes 0.3 s after the first reached an idle engine: within
    # batch_wait (1 s), so both share one prefill; with batch_wait=0 the first runs alone
    model, tok = tiny_any
    params = SamplingParams(max_tokens=3, temperature=0.0)
    for wait, first_rows in ((1.0, 2), (0.0, 1)):
        rec = Recording(model)
        engine = Engine(rec, tok, max_batch=8, batch_wait=wait).start()
        try:
            done = [queue.Queue(), queue.Queue()]
            engine.submit(tok.encode("the cat"), params, lambda k, x: done[0].put(k))
            time.sleep(0.3)
            engine.submit(tok.encode("a dog ran"), params, lambda k, x: done[1].put(k))
            for q in done:
                while q.get(timeout=60) != "done":
                    pass
        finally:
            engine.close()
        assert rec.shapes[0][0] == first_rows
    with pytest.raises(MinillmError, match="batch_wait"):
        Engine(model, tok, batch_wait=-1)


def test_an_idle_engine_keeps_its_rows_unless_a_request_grew_them(tiny):
    from minillm.serve.kvcache import GROW

    tok = tiny[1]
    backend.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=2 * GROW + 8, n_layer=1,
                          n_head=2, n_embd=16)).eval()
    engine = Engine(model, tok, max_batch=2).start()

    def idle_cache():
        for _ in range(500):  # the loop drops finished rows just after their "done"
            if not engine.active:
                return engine.cache
            time.sleep(0.01)
        raise AssertionError("the engine did not go idle")

    try:
        _collect(engine, tok.encode("ab"), SamplingParams(max_tokens=3, temperature=0.0))
        rows = idle_cache()
        assert rows is not None and rows.capacity == GROW
        _collect(engine, tok.encode("abc"), SamplingParams(max_tokens=3, temperature=0.0))
        assert idle_cache() is rows  # the next request reused them
        _collect(engine, tok.encode("ab"), SamplingParams(max_tokens=GROW + 4, temperature=0.0))
        assert idle_cache() is None  # grew past GROW positions: given back
    finally:
        engine.close()


def test_seeded_sampling_stop_strings_and_logprobs(tiny):
    model, tok = tiny
    engine = Engine(model, tok).start()
    try:
        p = SamplingParams(max_tokens=20, temperature=1.0, seed=7)
        a = _collect(engine, tok.encode("the "), p)
        b = _collect(engine, tok.encode("the "), p)
        assert a == b  # same seed, same text
        ids, text, _ = a
        stop = text[3:5]
        ids2, text2, reason = _collect(engine, tok.encode("the "),
                                       SamplingParams(max_tokens=20, seed=7, stop=[stop]))
        assert reason == "stop" and text2 == text[: text.find(stop)]
        events = queue.Queue()
        engine.submit(tok.encode("the cat"), SamplingParams(max_tokens=0, prompt_logprobs=2),
                      lambda k, x: events.put((k, x)))
        kind, pl = events.get(timeout=60)
        assert kind == "prompt" and pl.logprobs[0] is None and len(pl.logprobs) == 7
        assert events.get(timeout=60) == ("done", ("length", 0))
        with no_grad():
            logits, _ = model(np.asarray([tok.encode("the cat")]))
        lsm = minillm.functional.log_softmax(logits).data[0].astype(np.float64)
        want = [lsm[j - 1, t] for j, t in enumerate(tok.encode("the cat")) if j]
        np.testing.assert_allclose(pl.logprobs[1:], want, rtol=1e-5, atol=1e-5)
        assert [t for t, _ in pl.top[1]][0] == int(np.argmax(lsm[0]))
        # ending at an end token: with logprobs it comes as an "end" event, not as text
        first = int(np.argmax(lsm[-1]))
        events = queue.Queue()
        engine.submit(tok.encode("the cat"),
                      SamplingParams(max_tokens=5, temperature=0, logprobs=1,
                                     stop_ids=frozenset([first])),
                      lambda k, x: events.put((k, x)))
        kind, end = events.get(timeout=60)
        assert kind == "end" and end.id == first and end.text == ""
        np.testing.assert_allclose(end.logprob, lsm[-1, first], rtol=1e-5, atol=1e-5)
        assert end.top[0][0] == first
        assert events.get(timeout=60) == ("done", ("stop", 1))
        engine.submit(tok.encode("the cat"), SamplingParams(  # without logprobs: no event
            max_tokens=5, temperature=0, stop_ids=frozenset([first])),
            lambda k, x: events.put((k, x)))
        assert events.get(timeout=60) == ("done", ("stop", 1))
    finally:
        engine.close()


def test_queue_full_and_context_are_clear_errors(tiny):
    model, tok = tiny
    engine = Engine(model, tok, max_batch=1, queue_size=1)  # not started: nothing is taken
    engine.submit([1, 2], SamplingParams(max_tokens=1), lambda *a: None)
    with pytest.raises(QueueFull):
        engine.submit([1, 2], SamplingParams(max_tokens=1), lambda *a: None)
    with pytest.raises(MinillmError, match="context"):
        engine.submit([1] * 90, SamplingParams(max_tokens=7), lambda *a: None)
