"""minillm.chat: conversations kept in the KV cache between turns, in the format the model was
trained on (its chat template, a minillm SFT run's template, a plain transcript); stopping a
reply; the seed, the system prompt and saving. The terminal front end: test_cli_chat.py."""

import json

import numpy as np
import pytest
from recording_model import Recording

import minillm
from minillm import backend
from minillm.chat import (
    SFTChat,
    TemplateChat,
    TranscriptChat,
    checkpoint_task,
    open_chat,
)
from minillm.errors import MinillmError
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer
from minillm.train.tasks import SFT_TEMPLATE

TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ :\n"


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


# --------------------------------------------------------------------------- the model's own format
def greedy_ids(model, ids, n, stop_ids):
    """A plain greedy oracle on token ids: full forward each step, no cache."""
    ids, out = list(ids), []
    with minillm.no_grad():
        for _ in range(n):
            logits, _ = model(np.asarray([ids]), last_only=True)
            t = int(np.argmax(np.asarray(logits.data)[0, -1]))
            if t in stop_ids:
                break
            ids.append(t)
            out.append(t)
    return out


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, model_tok):
    """A minillm checkpoint that says it was fine-tuned for the SFT task (as finetune saves)."""
    from minillm.checkpoints.run import save

    model, tok = model_tok
    d = tmp_path_factory.mktemp("sft") / "run" / "best"
    save(d, model, config={"task": "sft", "epoch": 1}, tokenizer=tok)
    return d.parent


def test_an_sft_run_chats_through_its_prompt_response_template(sft_run, model_tok):
    model, tok = model_tok
    assert checkpoint_task(sft_run) == "sft"
    loaded, loaded_tok = minillm.load(sft_run)
    chat = open_chat(loaded, loaded_tok, sft_run, greedy=True, max_new_tokens=10)
    assert isinstance(chat, SFTChat)
    first = "".join(chat.send("hi"))
    ids = tok.encode(SFT_TEMPLATE.format(prompt="hi"))  # "PROMPT:\nhi\nRESPONSE:\n"
    assert tok.encode(first) == greedy_ids(model, ids, 10, {tok.eos_id})
    second = "".join(chat.send("ok"))  # earlier exchanges as whole examples, eos between them
    ids = ids + tok.encode(first) + [tok.eos_id] + tok.encode(SFT_TEMPLATE.format(prompt="ok"))
    assert tok.encode(second) == greedy_ids(model, ids, 10, {tok.eos_id})


def test_a_pretrained_run_chats_through_a_transcript_and_a_template_model_through_its_template(
        tmp_path, model_tok):
    from minillm.checkpoints.run import save

    model, tok = model_tok
    save(tmp_path / "plain", model, tokenizer=tok)
    assert checkpoint_task(tmp_path / "plain") is None
    assert isinstance(open_chat(model, tok, tmp_path / "plain"), TranscriptChat)
    assert checkpoint_task(tmp_path / "nothing") is None  # a built-in name, a .gguf file

    class Templated(CharTokenizer):
        chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"

    chat = open_chat(model, Templated.from_text(TEXT), "model.gguf")
    assert type(chat) is TemplateChat and chat.render([{"role": "user", "content": "ab"}]) == "ab"


def test_the_transcript_has_a_system_line_and_strips_the_reply(model_tok):
    model, tok = model_tok
    chat = TranscriptChat(model, tok, system="be kind", greedy=True, max_new_tokens=8)
    reply = "".join(chat.send("hi"))
    prompt = "System: be kind\nUser: hi\nAssistant:"
    want = minillm.generate(model, tok, prompt, greedy=True, max_new_tokens=8,
                            stop="\nUser:", use_cache=False)
    assert reply == want.lstrip()
    assert chat.transcript == f"System: be kind\nUser: hi\nAssistant: {want.strip()}\n"


# --------------------------------------------------------------------------- stopping a reply
class InterruptAt:
    """The model, with KeyboardInterrupt raised in its n-th call (as Ctrl-C would, mid-reply)."""

    def __init__(self, model, n):
        self.model, self.n, self.calls = model, n, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, idx, **kw):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.model(idx, **kw)


def test_an_interrupted_reply_stays_as_far_as_shown_and_the_cache_stays_consistent(model_tok):
    model, tok = model_tok
    chat = TemplateChat(InterruptAt(model, 5), tok, render, stop_ids=[tok.eos_id], greedy=True,
                        max_new_tokens=12)
    shown = []
    with pytest.raises(KeyboardInterrupt):
        for piece in chat.send("hello"):
            shown.append(piece)
    assert len(shown) == 4  # the prompt's call, then three tokens fed back
    assert chat.messages == [{"role": "user", "content": "hello"},
                             {"role": "assistant", "content": "".join(shown)}]
    reply = "".join(chat.send("more"))  # the next turn as a fresh run of the whole conversation
    prompt = render(chat.messages[:2] + [{"role": "user", "content": "more"}], True)
    assert reply == minillm.generate(model, tok, prompt, max_new_tokens=12, greedy=True,
                                     use_cache=False)


def test_a_reply_closed_early_joins_the_conversation_as_read(model_tok):
    model, tok = model_tok
    for chat in (TemplateChat(model, tok, render, stop_ids=[tok.eos_id], greedy=True,
                              max_new_tokens=12),
                 TranscriptChat(model, tok, greedy=True, max_new_tokens=12)):
        pieces = chat.send("hello")
        read = next(pieces) + next(pieces)
        pieces.close()
        assert chat.messages[-1] == {"role": "assistant", "content": read.strip()}
        assert chat.turn == 1


# --------------------------------------------------------------------------- seed, system, save
def test_set_seed_makes_the_next_reply_reproducible(model_tok):
    model, tok = model_tok
    chat = TemplateChat(model, tok, render, stop_ids=[tok.eos_id], temperature=2.0,
                        max_new_tokens=12)
    "".join(chat.send("one"))  # an unseeded turn first: /seed counts from the next reply
    chat.set_seed(7)
    a = "".join(chat.send("two"))
    fresh = TemplateChat(model, tok, render, stop_ids=[tok.eos_id], temperature=2.0,
                         max_new_tokens=12, seed=7)
    fresh.messages = chat.messages[:2]
    assert "".join(fresh.send("two")) == a
    replies = set()
    for seed in range(4):
        chat.reset()
        chat.set_seed(seed)
        replies.add("".join(chat.send("two")))
    assert len(replies) > 1  # the seed matters


def test_changing_the_system_prompt_and_saving_the_conversation(model_tok, tmp_path):
    model, tok = model_tok
    chat = TemplateChat(model, tok, render, stop_ids=[tok.eos_id], greedy=True,
                        max_new_tokens=6)
    first = "".join(chat.send("hi"))
    chat.system = "be short"
    second = "".join(chat.send("and"))
    want = minillm.generate(model, tok, render(chat.conversation()[:3]
                                               + [{"role": "user", "content": "and"}], True),
                            max_new_tokens=6, greedy=True, use_cache=False)
    assert second == want  # the cache was recomputed from the new system prompt
    chat.save(tmp_path / "talk.jsonl")
    lines = (tmp_path / "talk.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"messages": [
        {"role": "system", "content": "be short"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": first}, {"role": "user", "content": "and"},
        {"role": "assistant", "content": second}]}]
    from minillm.train.chat_data import read_chat  # the file is chat fine-tuning data as it is

    assert read_chat(tmp_path / "talk.jsonl")[0][1] == json.loads(lines[0])["messages"]


def test_a_lora_run_is_told_by_its_adapter_config(tmp_path):
    """A LoRA fine-tune saves adapter_config.json with its task (no task: an SFT adapter)."""
    base = {"rank": 4, "alpha": 8, "targets": ["c_attn"], "base": "../base", "base_fingerprint": "x"}
    for task, want in (({"task": "sft"}, "sft"), ({}, "sft"), ({"task": "classify"}, "classify")):
        d = tmp_path / f"lora_{want}_{len(task)}" / "best"
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(json.dumps({**base, **task}), encoding="utf-8")
        assert checkpoint_task(d.parent) == want
