"""Chat JSONL: rendering through the model's template and the assistant-only loss mask."""

import json

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm
from minillm.errors import DataError
from minillm.train.chat_data import (
    assistant_spans,
    chat_example,
    detect_task,
    load_chat,
    template_for,
)
from minillm.train.tasks import IGNORE

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi there"},
    {"role": "assistant", "content": "hello you"},
    {"role": "user", "content": "and then"},
    {"role": "assistant", "content": "ok"},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "tiny.gguf"
    write_tiny_gguf(path)
    return minillm.load(path)[1]


def _text(tok, ids):
    inv = {i: s for s, i in tok.vocab.items()}
    # control tokens decode to nothing; show them by their strings
    return "".join(tok.decode([i]) or inv[i] for i in ids)


def test_mask_is_exactly_the_assistant_turns(tok):
    template = template_for(tok)
    full = template.render(CONV)
    assert full == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi there"
                    "<|im_end|>\n<|im_start|>assistant\nhello you<|im_end|>\n<|im_start|>user\n"
                    "and then<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n")
    ids, spans = assistant_spans(tok, template, CONV)
    assert ids == tok.encode(full)
    assert [_text(tok, ids[a:b]) for a, b in spans] == ["hello you<|im_end|>\n", "ok<|im_end|>\n"]
    x, y = chat_example(tok, template, CONV, block_size=512)
    assert list(x) == ids[:-1]
    counted = np.flatnonzero(y != IGNORE) + 1  # y[t] is token t + 1
    want = [t for a, b in spans for t in range(a, b)]
    assert list(counted) == want
    # the counted targets, in order, spell the two replies and their end-of-turn tokens
    assert _text(tok, y[y != IGNORE].tolist()) == "hello you<|im_end|>\nok<|im_end|>\n"
    # the generation prompt "<|im_start|>assistant\n" is context, not a target
    a0 = spans[0][0]
    assert _text(tok, ids[:a0]).endswith("<|im_start|>assistant\n")
    assert y[a0 - 2] == IGNORE and y[a0 - 1] == ids[a0]


def test_default_system_prompt_is_context(tok):
    """The SmolLM2 template adds its own system turn when there is none; it is never a target."""
    template = template_for(tok)
    conv = CONV[1:3]
    x, y = chat_example(tok, template, conv, block_size=512)
    assert "SmolLM" in template.render(conv)
    assert _text(tok, y[y != IGNORE].tolist()) == "hello you<|im_end|>\n"


def test_truncation_and_errors(tok, tmp_path):
    template = template_for(tok)
    ids, spans = assistant_spans(tok, template, CONV)
    x, y = chat_example(tok, template, CONV, block_size=spans[0][0] + 3)
    # block_size + 1 tokens are kept: the first 4 tokens of the reply are targets
    assert len(x) == spans[0][0] + 3 and (y != IGNORE).sum() == 4
    assert chat_example(tok, template, CONV, block_size=spans[0][0] - 1) is None
    bad = tmp_path / "bad.jsonl"
    for line, msg in ((CONV[:2], "no assistant"), ([{"role": "robot", "content": "x"}], "role"),
                      ("text", "non-empty list")):
        bad.write_text(json.dumps({"messages": line}) + "\n")
        with pytest.raises(DataError, match=msg):
            load_chat(bad, tok, 512)
    bad.write_text(json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match="messages"):
        load_chat(bad, tok, 512)


def test_detect_task(tmp_path):
    for rec, task in (({"messages": []}, "chat"), ({"prompt": "a", "response": "b"}, "sft"),
                      ({"text": "a", "label": "x"}, "classify")):
        p = tmp_path / f"{task}.jsonl"
        p.write_text("\n" + json.dumps(rec) + "\n")
        assert detect_task(p) == task


def test_detect_task_leaves_bad_json_to_the_reader(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("{not json\n")
    assert detect_task(p) == "sft"
    with pytest.raises(DataError, match="cannot read"):
        detect_task(tmp_path / "missing.jsonl")
