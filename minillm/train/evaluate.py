"""Held-out metrics of a chat model: assistant-token loss and contains-answer accuracy.

A held-out file is chat JSONL whose last message is the assistant's expected reply; a record may
carry ``"answer"``: the short string a correct reply must contain (a name, a price, a year). The
accuracy asks the model for a reply to the conversation without that last message (greedy, at
most ``max_new_tokens`` tokens) and counts the replies that contain the answer, ignoring case
(without ``"answer"`` the whole expected reply must appear). The loss is the mean cross-entropy
over every assistant token of the held-out conversations (token-weighted), the quantity the
fine-tuning minimises.
"""

import numpy as np

from minillm.autograd import no_grad
from minillm.errors import DataError
from minillm.train import tasks
from minillm.train.chat_data import check_messages, load_chat, template_for


def read_questions(path):
    """[(messages without the final reply, answer), ...] of a held-out chat JSONL file."""
    out = []
    for n, rec in tasks.read_jsonl(path, ()):
        if "messages" not in rec:
            raise DataError(f"{path} line {n} lacks the key 'messages'")
        msgs = check_messages(rec["messages"], f"{path} line {n}")
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise DataError(f"{path} line {n}: the last message must be the assistant's reply")
        answer = rec.get("answer", msgs[-1]["content"])
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{path} line {n}: 'answer' must be a non-empty string")
        out.append((msgs[:-1], answer))
    return out


def contains(reply, answer):
    return answer.strip().lower() in reply.lower()


@no_grad()
def assistant_loss(model, examples, batch_size=8, pad_id=0):
    """Mean cross-entropy over the assistant tokens of [(x, y), ...] (token-weighted)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            x, y = tasks.pad_batch(examples[i: i + batch_size], pad_id)
            n = int((y != tasks.IGNORE).sum())
            if n:
                total += model(x, y)[1].item() * n
                count += n
    finally:
        model.train(was)
    return total / max(count, 1)


def answer_accuracy(model, tokenizer, questions, max_new_tokens=24, batch_size=8):
    """(accuracy, [(question text, reply, answer, correct), ...]) over held-out questions."""
    from minillm.sample import generate

    template = template_for(tokenizer)
    prompts = [template.render(m, add_generation_prompt=True) for m, _ in questions]
    rows = []
    for i in range(0, len(prompts), batch_size):
        replies = generate(model, tokenizer, prompts[i: i + batch_size],
                           max_new_tokens=max_new_tokens, greedy=True, stop=["<|im_end|>"])
        for (msgs, answer), reply in zip(questions[i: i + batch_size], replies):
            rows.append((msgs[-1]["content"], reply.strip(), answer, contains(reply, answer)))
    acc = float(np.mean([r[3] for r in rows])) if rows else 0.0
    return acc, rows


def evaluate_chat(model, tokenizer, path, block_size=None, max_new_tokens=24, batch_size=8):
    """{"accuracy", "loss", "n"} of ``model`` on the held-out chat file ``path``, and the rows."""
    T = block_size or model.config.block_size
    examples = load_chat(path, tokenizer, T)
    loss = assistant_loss(model, examples, batch_size, tokenizer.eos_id)
    acc, rows = answer_accuracy(model, tokenizer, read_questions(path), max_new_tokens,
                                batch_size)
    return {"accuracy": acc, "loss": loss, "n": len(rows)}, rows
