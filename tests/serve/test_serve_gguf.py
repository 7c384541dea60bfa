"""The server on a model as ``minillm.load`` gives it: a tiny random Llama GGUF (quantized
weights, byte-level BPE with special tokens, the ChatML template of SmolLM2), so chat goes
through the real ChatTemplate and end-of-turn tokens."""

import numpy as np
import pytest

import minillm
from minillm import functional as F
from minillm.autograd import no_grad
from minillm.chat import TemplateChat, chat_template_of

openai = pytest.importorskip("openai")
pytest.importorskip("gguf")

from gguf_fixtures import write_tiny_gguf  # noqa: E402

API_KEY = "gguf-key"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory, server_class):
    from minillm.serve.app import create_app, served_model

    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    model, tok = minillm.load(path)
    served = served_model("tiny-llama", model, tok)
    assert served.chat_template is not None and len(served.stop_ids) == 2  # eos, <|im_end|>
    with server_class(create_app([served], api_key=API_KEY)) as s:
        s.model, s.tok = model, tok
        s.client = openai.OpenAI(base_url=s.url + "/v1", api_key=API_KEY, max_retries=0,
                                 timeout=120)
        yield s


def test_chat_equals_minillm_chat_on_a_gguf_model(llama_server):
    s = llama_server
    message = "What is the capital of France?"
    r = s.client.chat.completions.create(model="tiny-llama", temperature=0, max_tokens=12,
                                         messages=[{"role": "user", "content": message}])
    chat = TemplateChat.for_model(s.model, s.tok, greedy=True, max_new_tokens=12)
    want = "".join(chat.send(message))
    template, _ = chat_template_of(s.tok)
    prompt = template.render([{"role": "user", "content": message}], add_generation_prompt=True)
    assert r.choices[0].message.content == want
    # both are greedy through other attention paths (the engine's masked batch step, the
    # chat's plain cache): equal because no step's top-2 logits are within rounding
    ids = s.tok.encode(prompt + want)
    with no_grad():
        logits, _ = s.model(np.asarray([ids]))
    top2 = np.sort(logits.data[0, len(s.tok.encode(prompt)) - 1:], axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-4
    assert "<|im_start|>assistant" in prompt
    assert r.usage.prompt_tokens == len(s.tok.encode(prompt))
    streamed = s.client.chat.completions.create(
        model="tiny-llama", temperature=0, max_tokens=12, stream=True,
        messages=[{"role": "user", "content": message}])
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == want


def test_prompt_logprobs_of_bpe_tokens(llama_server):
    s = llama_server
    prompt = "The quick brown fox jumps over the lazy dog."
    r = s.client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=0, echo=True,
                                    logprobs=1)
    lp = r.choices[0].logprobs
    ids = s.tok.encode(prompt)
    assert len(ids) < len(prompt)  # merges: fewer tokens than characters
    assert "".join(lp.tokens) == prompt and r.choices[0].text == prompt
    assert lp.text_offset == [len(s.tok.decode(ids[:j])) for j in range(len(ids))]
    with no_grad():
        logits, _ = s.model(np.asarray([ids]))
    lsm = F.log_softmax(logits).data[0].astype(np.float64)
    np.testing.assert_allclose(lp.token_logprobs[1:], [lsm[j - 1, t] for j, t in
                                                       enumerate(ids) if j], atol=1e-4)
