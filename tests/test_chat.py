"""TemplateChat: the conversation rendered by a template, kept in the KV cache between turns."""

import pytest
from recording_model import Recording

import minillm
from minillm import backend
from minillm.chat import TemplateChat
from minillm.errors import MinillmError
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyz :\n"


def render(messages, add_generation_prompt=False):
    """A ChatML-like template in plain characters (the char tokenizer has no special tokens)."""
    out = "".join(f"{m['role']}:{m['content']}\n" for m in messages)
    return out + ("assistant:" if add_generation_prompt else "")


@pytest.fixture(scope="module")
def model_tok():
    backend.manual_seed(3)
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=160, n_layer=2, n_head=2,
                          n_embd=32, initializer_range=0.3))
    return model.eval(), tok


def test_each_turn_equals_a_fresh_greedy_run_of_the_rendered_conversation(model_tok):
    model, tok = model_tok
    chat = TemplateChat(model, tok, render, stop_ids=[tok.eos_id], system="be brief",
                        greedy=True, max_new_tokens=12)
    conversation = [{"role": "system", "content": "be brief"}]
    for message in ["hi", "what is up", "ok"]:
        reply = "".join(chat.send(message))
        prompt = render(conversation + [{"role": "user", "content": message}], True)
        fresh = minillm.generate(model, tok, prompt, max_new_tokens=12, greedy=True,
                                 use_cache=False)
        assert reply == fresh
        conversation += [{"role": "user", "content": message},
                         {"role": "assistant", "content": reply}]
    assert chat.messages == conversation[1:]


def test_later_turns_run_only_the_new_tokens(model_tok):
    model, tok = model_tok
    counting = Recording(model)
    chat = TemplateChat(counting, tok, render, stop_ids=[tok.eos_id], greedy=True,
                        max_new_tokens=5)
    first = "".join(chat.send("hello there"))
    n_first = len(render([{"role": "user", "content": "hello there"}], True))
    assert counting.fed[0] == n_first  # the prompt runs once
    assert counting.fed[1:] == [1] * (len(counting.fed) - 1)  # then one token a step
    counting.shapes.clear()
    "".join(chat.send("and"))
    whole = render([{"role": "user", "content": "hello there"},
                    {"role": "assistant", "content": first},
                    {"role": "user", "content": "and"}], True)
    cached = n_first + len(first)  # the generated reply is in the cache already
    assert counting.fed[0] == len(whole) - cached


def test_reset_forgets_and_a_too_long_message_is_one_sentence(model_tok):
    model, tok = model_tok
    chat = TemplateChat(model, tok, render, stop_ids=[tok.eos_id], greedy=True,
                        max_new_tokens=4)
    a = "".join(chat.send("abc"))
    chat.reset()
    assert chat.messages == [] and "".join(chat.send("abc")) == a
    with pytest.raises(MinillmError, match="context holds 160"):
        "".join(chat.send("x" * 200))


def test_old_turns_are_dropped_when_the_context_is_full(model_tok):
    model, tok = model_tok
    chat = TemplateChat(model, tok, render, stop_ids=[tok.eos_id], greedy=True,
                        max_new_tokens=20)
    for i in range(8):
        "".join(chat.send("tell me about the sea " + "abcdefgh"[i]))
    rendered = render(chat.messages)
    assert len(rendered) <= 160 and chat.messages[-2]["content"].endswith("h")
