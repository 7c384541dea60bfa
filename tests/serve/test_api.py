"""The OpenAI-compatible API, driven by the real ``openai`` client against a real server
(tests/serve/conftest.py): same text streaming or not, exact usage, stop, seed, n, logprobs,
echo, every error status, concurrent clients, and a disconnect that stops generation."""

import gc
import json
import threading
import time

import numpy as np
import pytest

import minillm
from minillm import functional as F
from minillm.autograd import no_grad

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


def log_softmax(model, ids):
    """minillm's own forward pass: log-probabilities (T, V) after each of ``ids``."""
    with no_grad():
        logits, _ = model(np.asarray([ids]))
        return F.log_softmax(logits).data[0].astype(np.float64)


def test_models_health_and_the_page(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny", "tiny-chat", "slow", "stalled"]
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>minillm chat</title>" in page.text
    assert 'src="http' not in page.text and 'href="http' not in page.text  # works offline


def test_a_running_server_leaves_its_startup_objects_out_of_full_collections(server_class,
                                                                           tiny):
    from minillm.serve.app import ServedModel, create_app
    from minillm.serve.engine import Engine

    model, tok = tiny
    app = create_app([ServedModel("t", Engine(model, tok), tok)])
    before = [object()]  # a container: one the collector would scan
    with server_class(app) as s:
        assert httpx.get(s.url + "/health").status_code == 200
        assert gc.get_freeze_count() > 1000
        assert not any(o is before for o in gc.get_objects())  # frozen objects are not listed
    assert gc.get_freeze_count() == 0
    assert any(o is before for o in gc.get_objects())


def test_engine_events_wake_the_loop_once_per_burst():
    # a decode step's events (one per request, from the engine thread) cross into the event
    # loop with one wake-up; the loop hands each its own run, in order; a closed loop cancels
    from minillm.serve.app import _Crossing

    class Loop:
        def __init__(self):
            self.calls, self.closed = [], False

        def call_soon_threadsafe(self, fn):
            if self.closed:
                raise RuntimeError("Event loop is closed")
            self.calls.append(fn)

    class Run:
        def __init__(self):
            self.got, self.cancelled = [], False

        def arrive(self, event):
            self.got.append(event)

        def cancel(self):
            self.cancelled = True

    loop = Loop()
    crossing = _Crossing(loop)
    runs = [Run() for _ in range(8)]
    for step in range(2):
        for i, r in enumerate(runs):
            crossing.put(r, (0, "token", (step, i)))
        assert len(loop.calls) == step + 1  # one wake-up for the burst
        loop.calls[-1]()  # the loop runs it: every event of the burst delivered
        assert [r.got[-1] for r in runs] == [(0, "token", (step, i)) for i in range(8)]
    loop.closed = True
    crossing.put(runs[0], (0, "token", "late"))
    crossing.put(runs[1], (0, "token", "late"))  # (after a failed wake: still cancelled)
    assert runs[0].cancelled and runs[1].cancelled and not runs[2].cancelled


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, seed=3),
                                      dict(temperature=0.8, top_p=0.9, seed=4)])
def test_completion_streamed_equals_plain_equals_generate(server, client, sampling):
    prompt = "the cat sat"
    plain = client.completions.create(model="tiny", prompt=prompt, max_tokens=20, **sampling)
    chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=20,
                                            stream=True, stream_options={"include_usage": True},
                                            **sampling))
    text, reason = plain.choices[0].text, plain.choices[0].finish_reason
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    want = minillm.generate(server.model, server.tok, prompt, max_new_tokens=20,
                            greedy=sampling["temperature"] == 0,
                            temperature=sampling["temperature"], top_p=sampling.get("top_p"),
                            seed=sampling.get("seed"))
    assert text == want
    # usage: the tokenizer's counts (an eos that ended the text is a generated token too)
    assert plain.usage.prompt_tokens == len(server.tok.encode(prompt))
    assert plain.usage.completion_tokens == len(server.tok.encode(text)) + (reason == "stop")
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens


def test_chat_streamed_equals_plain_and_renders_the_template(server, client):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    plain = client.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=15,
                                           temperature=0)
    prompt = server.template.render(msgs, add_generation_prompt=True)
    reply = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert reply == minillm.generate(server.model, server.tok, prompt, max_new_tokens=15,
                                     greedy=True)
    assert plain.usage.prompt_tokens == len(server.tok.encode(prompt))
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=msgs, max_completion_tokens=15, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].usage == plain.usage
    # the wire format: only data lines, ending with data: [DONE]
    r = httpx.post(server.url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {server.api_key}"},
                   json={"model": "tiny-chat", "messages": msgs, "max_tokens": 3,
                         "stream": True}, timeout=60)
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_stop_strings_and_length(server, client):
    base = client.completions.create(model="tiny", prompt="once upon", max_tokens=30,
                                     temperature=0).choices[0].text
    assert len(base) >= 10, base
    stop = base[6:9]
    for stops in (stop, ["#never#", stop]):
        r = client.completions.create(model="tiny", prompt="once upon", max_tokens=30,
                                      temperature=0, stop=stops)
        assert r.choices[0].text == base[: base.find(stop)]
        assert r.choices[0].finish_reason == "stop"
    r = client.completions.create(model="tiny", prompt="once upon", max_tokens=5, temperature=0)
    assert r.choices[0].text == base[:5] and r.choices[0].finish_reason == "length"
    c = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user",
                                       "content": "hi"}], max_tokens=4, temperature=0)
    assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 4


def test_ignore_eos_decodes_past_the_end_token(server, server_class, client):
    from minillm.serve.app import ServedModel, create_app
    from minillm.serve.engine import Engine

    msgs = [{"role": "user", "content": "hello there"}]
    reply = client.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=6,
                                           temperature=0).choices[0].message.content
    first = server.tok.encode(reply)[0]  # made the end token of a model of its own
    ends = ServedModel("ends", Engine(server.model, server.tok), server.tok, server.template,
                       stop_ids=frozenset([first]))
    with server_class(create_app([ends])) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="ends", messages=msgs, max_tokens=6, temperature=0)
        assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == ""
        r = c.chat.completions.create(model="ends", messages=msgs, max_tokens=6, temperature=0,
                                      extra_body={"ignore_eos": True})
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == reply
        assert r.usage.completion_tokens == 6
        with pytest.raises(openai.BadRequestError, match="ignore_eos"):
            c.completions.create(model="ends", prompt="a", max_tokens=2,
                                 extra_body={"ignore_eos": "yes"})


def test_seed_and_n(server, client):
    kw = dict(model="tiny", prompt="abc", max_tokens=16, temperature=1.2)
    a = client.completions.create(seed=9, **kw).choices[0].text
    assert client.completions.create(seed=9, **kw).choices[0].text == a
    many = client.completions.create(seed=9, n=3, **kw)
    assert [c.index for c in many.choices] == [0, 1, 2]
    for j, c in enumerate(many.choices):  # choice j draws with seed + j
        assert c.text == client.completions.create(seed=9 + j, **kw).choices[0].text
    assert many.usage.prompt_tokens == 3
    assert many.usage.completion_tokens == sum(
        len(c.text) + (c.finish_reason == "stop") for c in many.choices)
    two = client.completions.create(model="tiny", prompt=["ab", "cd"], n=2, max_tokens=4,
                                    temperature=0)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    assert two.choices[0].text == two.choices[1].text  # greedy: both choices alike
    assert two.choices[2].text == client.completions.create(
        model="tiny", prompt="cd", max_tokens=4, temperature=0).choices[0].text
    chat = client.chat.completions.create(model="tiny-chat", n=2, seed=1, max_tokens=8,
                                          messages=[{"role": "user", "content": "yo"}])
    assert len(chat.choices) == 2


def test_echo_with_max_tokens_0_gives_the_prompt_logprobs(server, client):
    prompt = "hello world"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True,
                                  logprobs=3)
    c = r.choices[0]
    ids = server.tok.encode(prompt)
    lsm = log_softmax(server.model, ids)
    assert c.text == prompt and c.finish_reason == "length"
    assert c.logprobs.tokens == list(prompt)
    assert c.logprobs.token_logprobs[0] is None and c.logprobs.top_logprobs[0] is None
    np.testing.assert_allclose(c.logprobs.token_logprobs[1:],
                               [lsm[j - 1, t] for j, t in enumerate(ids) if j], atol=1e-5)
    assert c.logprobs.text_offset == list(range(len(prompt)))
    for j in range(1, len(ids)):
        top = c.logprobs.top_logprobs[j]
        assert len(top) == 3
        best = server.tok.decode([int(np.argmax(lsm[j - 1]))])
        assert top[best] == pytest.approx(lsm[j - 1].max(), abs=1e-5)
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 0
    # the same prompt as token ids (lm-evaluation-harness sends ids)
    r2 = client.completions.create(model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=1)
    assert r2.choices[0].logprobs.token_logprobs == c.logprobs.token_logprobs


def test_streamed_echo_and_logprobs_equal_the_plain_answer(server, client):
    kw = dict(model="tiny", prompt="one fish", max_tokens=6, temperature=0, echo=True,
              logprobs=2)
    plain = client.completions.create(**kw).choices[0]
    chunks = [c.choices[0] for c in client.completions.create(stream=True, **kw) if c.choices]
    assert "".join(c.text for c in chunks) == plain.text
    for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        streamed = [x for c in chunks if c.logprobs for x in getattr(c.logprobs, field)]
        assert streamed == getattr(plain.logprobs, field)


def test_generated_logprobs_equal_the_forward_pass(server, client):
    prompt = "the dog"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0,
                                  logprobs=2)
    c = r.choices[0]
    ids = server.tok.encode(prompt + c.text)
    lsm = log_softmax(server.model, ids)
    P = len(prompt)
    np.testing.assert_allclose(c.logprobs.token_logprobs,
                               [lsm[P - 1 + j, ids[P + j]] for j in range(len(c.text))],
                               atol=1e-5)
    assert c.logprobs.text_offset == list(range(P, P + len(c.text)))
    msgs = [{"role": "user", "content": "hi"}]
    chat = client.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=6,
                                          temperature=0, logprobs=True, top_logprobs=2)
    text = chat.choices[0].message.content
    prompt_ids = server.tok.encode(server.template.render(msgs, True))
    reply_ids = server.tok.encode(text)
    lsm = log_softmax(server.model, prompt_ids + reply_ids)
    P = len(prompt_ids)
    content = chat.choices[0].logprobs.content
    assert "".join(e.token for e in content) == text
    for j, e in enumerate(content):
        assert e.logprob == pytest.approx(lsm[P - 1 + j, reply_ids[j]], abs=1e-5)
        assert len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token


def test_errors_have_the_status_and_shape_of_openai(server, client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="a", temperature=5)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="a", frequency_penalty=1.0)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="a" * 200)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="abc", max_tokens=126)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:  # a base model has no chat template
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    assert "chat template" in e.value.message
    with pytest.raises(openai.BadRequestError):  # a character the tokenizer cannot encode
        client.completions.create(model="tiny", prompt="caf\u00e9")
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="a")
    assert e.value.code == "model_not_found"
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.get(server.url + "/v1/models").status_code == 401
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="tiny", prompt="a" * (server.max_body + 1))
    assert e.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="stalled", prompt="a")
    assert e.value.status_code == 503
    with pytest.raises(openai.BadRequestError):  # more than its queue ever holds: not a retry
        client.completions.create(model="stalled", prompt="a", n=2)
    r = httpx.post(server.url + "/v1/completions", headers={"Authorization": f"Bearer {server.api_key}"},
                   json={"model": "stalled", "prompt": "a"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}


def test_eight_concurrent_clients_each_get_their_solo_text(server, client):
    prompts = ["the cat", "a dog ran", "hello", "xyz", "what is it", "Q:", "one two three", "z"]
    solo = [client.completions.create(model="tiny", prompt=p, max_tokens=24,
                                      temperature=0).choices[0].text for p in prompts]
    # Greedy picks the largest logit. Batching changes the logits by float32 rounding only
    # (test_engine.py holds each batched row to its solo logits within 1e-5), so no pick can
    # flip while every step's top-2 gap is ten times that or more.
    for p, text in zip(prompts, solo):
        ids = server.tok.encode(p + text)
        lsm = log_softmax(server.model, ids)[len(p) - 1:]
        top2 = np.sort(lsm, axis=-1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-4
    got = [None] * len(prompts)

    def run(i):
        got[i] = client.completions.create(model="tiny", prompt=prompts[i], max_tokens=24,
                                           temperature=0).choices[0].text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == solo


def test_a_client_that_disconnects_stops_its_generation(server, client):
    stream = client.completions.create(model="slow", prompt="abc", max_tokens=120,
                                       temperature=0, stream=True)
    it = iter(stream)
    next(it)
    next(it)
    stream.close()
    time.sleep(1.5)
    calls = server.slow.calls
    time.sleep(1.0)
    assert server.slow.calls == calls  # nothing runs any more
    assert calls < 60  # 120 steps of 20 ms would still be running


@pytest.mark.parametrize("path, body", [
    ("completions", {"model": "tiny", "prompt": "a", "stream_options": {"include_usage": True}}),
    ("completions", {"model": "tiny", "prompt": [1, "a"]}),
    ("completions", {"model": "tiny", "prompt": []}),
    ("completions", {"model": "tiny", "prompt": [10_000]}),
    ("completions", {"model": "tiny", "prompt": "a", "n": 0}),
    ("completions", {"model": "tiny", "prompt": "a", "max_tokens": -1}),
    ("completions", {"model": "tiny", "prompt": "a", "stop": [1]}),
    ("completions", {"model": "tiny", "prompt": "a", "logprobs": 50}),
    ("completions", {"model": "tiny", "prompt": "a", "stream": "yes"}),
    ("completions", {"prompt": "a"}),
    ("chat/completions", {"model": "tiny-chat", "messages": []}),
    ("chat/completions", {"model": "tiny-chat", "messages": [{"content": "x"}]}),
    ("chat/completions", {"model": "tiny-chat", "messages": [{"role": "user", "content": 3}]}),
    ("chat/completions", {"model": "tiny-chat", "top_logprobs": 2,
                          "messages": [{"role": "user", "content": "x"}]}),
])
def test_invalid_requests_are_400_in_openai_shape(server, path, body):
    r = httpx.post(f"{server.url}/v1/{path}", json=body,
                   headers={"Authorization": f"Bearer {server.api_key}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"].endswith(".")


def test_bad_json_and_unknown_routes(server):
    auth = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/nothing", headers=auth)
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(server.url + "/v1/completions", headers=auth).status_code == 405
