"""Chat fine-tuning data: JSONL conversations rendered through the model's own chat template, with
the loss on the assistant's tokens only.

Each line is ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
(the layout of OpenAI fine-tuning files and Hugging Face chat datasets). The conversation is
rendered with the template the model was trained on (``tokenizer.chat_template``), so fine-tuning
sees exactly the layout that ``minillm chat`` will show it.

The assistant mask comes from the template itself, not from guessing at markers: for every
assistant message i, the text of messages[:i] rendered with ``add_generation_prompt=True`` (the
conversation up to the opening of that reply) and the text of messages[:i+1] (the same, with the
reply and whatever the template closes a turn with) are both prefixes of the full rendering; the
tokens between their two token counts are the ones the template adds for that reply: its
content and its end-of-turn token (ChatML: ``...<|im_end|>`` and the newline after it). Those
tokens are the targets; every other position is IGNORE. The prefix property is checked on the
token ids, so a template or tokenizer that merges tokens across a turn boundary is an error that
says so rather than a silently shifted mask.
"""

import numpy as np

from minillm.chat import chat_template_of
from minillm.errors import DataError, MinillmError
from minillm.train.tasks import IGNORE, read_jsonl

ROLES = ("system", "user", "assistant")


def template_for(tokenizer):
    """The model's ChatTemplate, or a DataError saying the model has none."""
    found = chat_template_of(tokenizer)
    if found is None:
        raise DataError("chat data needs a model whose tokenizer carries a chat template "
                        "(an instruct model, e.g. smollm2-135m-instruct)")
    return found[0]


def check_messages(messages, where):
    """The list of {"role", "content"} dicts, or a DataError naming ``where``."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {j} must be an object with a string 'content'")
        if m.get("role") not in ROLES:
            raise DataError(f"{where}: message {j} has role {m.get('role')!r}; "
                            f"roles are {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation has no assistant message to learn")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def assistant_spans(tokenizer, template, messages):
    """(ids, [(start, end), ...]): the token ids of the whole rendered conversation and, for each
    assistant message, the half-open range of ids the template adds for that reply."""
    ids = tokenizer.encode(template.render(messages))
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.encode(template.render(messages[:i], add_generation_prompt=True)) \
            if i else []
        after = tokenizer.encode(template.render(messages[: i + 1]))
        if ids[: len(before)] != before or ids[: len(after)] != after or len(after) <= len(before):
            raise DataError(
                f"the chat template's rendering of assistant message {i} is not a token prefix "
                "of the whole conversation, so its tokens cannot be told apart")
        spans.append((len(before), len(after)))
    return ids, spans


def chat_example(tokenizer, template, messages, block_size):
    """(x (L,), y (L,)) for one conversation: x = ids[:-1], y = ids[1:] with every target that
    is not an assistant token set to IGNORE. Conversations longer than block_size + 1 tokens
    keep their first block_size + 1 tokens; None when no assistant token is left."""
    ids, spans = assistant_spans(tokenizer, template, messages)
    keep = np.zeros(len(ids), dtype=bool)
    for a, b in spans:
        keep[a:b] = True
    ids, keep = ids[: block_size + 1], keep[: block_size + 1]
    x = np.asarray(ids[:-1], dtype=np.int64)
    y = np.asarray(ids[1:], dtype=np.int64)
    y[~keep[1:]] = IGNORE  # y[t] is token t + 1
    if not (y != IGNORE).any():
        return None
    return x, y


def read_chat(path):
    """[(line number, messages), ...] of a chat JSONL file."""
    out = []
    for n, rec in read_jsonl(path, ()):  # "messages" is a list, checked here
        if "messages" not in rec:
            raise DataError(f"{path} line {n} lacks the key 'messages'")
        out.append((n, check_messages(rec["messages"], f"{path} line {n}")))
    return out


def load_chat(path, tokenizer, block_size):
    """[(x, y), ...] for every conversation of a chat JSONL file."""
    template = template_for(tokenizer)
    out = []
    for n, messages in read_chat(path):
        try:
            ex = chat_example(tokenizer, template, messages, block_size)
        except MinillmError as e:
            raise DataError(f"{path} line {n}: {e}") from None
        if ex is None:
            raise DataError(f"{path} line {n}: the first assistant reply starts after "
                            f"block_size {block_size} tokens; shorten it or raise --block-size")
        out.append(ex)
    return out


def detect_task(path):
    """ "chat", "sft" or "classify" from the keys of the first record of a JSONL file."""
    import json

    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:  # the reader names
            line = next((ln for ln in f if ln.strip()), "")  # a line that is not UTF-8
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        rec = json.loads(line)
    except ValueError:
        return "sft"  # the reader of that task reports the line (or the empty file) exactly
    if isinstance(rec, dict):
        if "messages" in rec:
            return "chat"
        if "label" in rec:
            return "classify"
    return "sft"
