"""Chat templates rendered as Hugging Face renders them (minillm.tokenizers.chat_template), on
the SmolLM2 ChatML template copied out of the real GGUF (tests/fixtures, Apache-2.0 data)."""

import pytest
from gguf_fixtures import CHATML

from minillm.errors import TokenizerError
from minillm.tokenizers.chat_template import ChatTemplate, render_chat

DEFAULT_SYSTEM = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n")
Q = "What is the capital of France?"


def user(text):
    return {"role": "user", "content": text}


def test_one_message_with_generation_prompt_is_the_documented_prompt():
    got = ChatTemplate(CHATML).render([user(Q)], add_generation_prompt=True)
    assert got == ("<|im_start|>system\n"
                   "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
                   "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_one_message_without_generation_prompt():
    assert render_chat(CHATML, [user(Q)]) == (
        DEFAULT_SYSTEM + f"<|im_start|>user\n{Q}<|im_end|>\n")


def test_system_message_replaces_the_default():
    msgs = [{"role": "system", "content": "Answer in one word."}, user(Q)]
    assert ChatTemplate(CHATML).render(msgs, add_generation_prompt=True) == (
        "<|im_start|>system\nAnswer in one word.<|im_end|>\n"
        f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n")


def test_three_messages_with_and_without_system():
    turns = [user(Q), {"role": "assistant", "content": "Paris."}, user("And of Italy?")]
    body = (f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
            "<|im_start|>user\nAnd of Italy?<|im_end|>\n")
    t = ChatTemplate(CHATML)
    assert t.render(turns, add_generation_prompt=True) == (
        DEFAULT_SYSTEM + body + "<|im_start|>assistant\n")
    assert t.render(turns) == DEFAULT_SYSTEM + body
    sys = [{"role": "system", "content": "Be brief."}] + turns
    assert t.render(sys) == "<|im_start|>system\nBe brief.<|im_end|>\n" + body


def test_trim_and_lstrip_blocks_as_hugging_face_sets_them():
    src = ("{% for m in messages %}\n    {% if m['role'] == 'user' %}\n"
           "U: {{ m['content'] }}\n    {% else %}\nA: {{ m['content'] }}\n    {% endif %}\n"
           "{% endfor %}")
    msgs = [user("hi"), {"role": "assistant", "content": "yo"}]
    assert ChatTemplate(src).render(msgs) == "U: hi\nA: yo\n"


def test_special_token_variables_tojson_and_loop_controls():
    src = ("{{ bos_token }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
           "{{ m | tojson }}{% endfor %}{{ eos_token }}")
    got = ChatTemplate(src, bos_token="<s>", eos_token="</s>").render(
        [user("<b> & é"), user("never")])
    assert got == '<s>{"role": "user", "content": "<b> & é"}</s>'


def test_raise_exception_is_one_sentence():
    src = ("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
           "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
           "{% endfor %}")
    with pytest.raises(TokenizerError, match="Only user and assistant roles") as e:
        ChatTemplate(src).render([{"role": "tool", "content": "x"}])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("src", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # reaching Python internals
    "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",  # mutating the input
])
def test_the_sandbox_refuses_hostile_templates(src):
    with pytest.raises(TokenizerError, match="failed to render"):
        ChatTemplate(src).render([user("hi")])


def test_bad_templates_and_messages():
    with pytest.raises(TokenizerError, match="not valid Jinja"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(TokenizerError, match="empty"):
        ChatTemplate("  ")
    t = ChatTemplate(CHATML)
    with pytest.raises(TokenizerError, match="message 0"):
        t.render([{"role": "user"}])
    with pytest.raises(TokenizerError, match="list of"):
        t.render("hello")
