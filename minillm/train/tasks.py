"""Fine-tuning data: JSONL files -> token sequences with targets -> padded batches.

Two tasks:

SFT (supervised fine-tuning), lines ``{"prompt": ..., "response": ...}``. Each example becomes

    PROMPT:\\n{prompt}\\nRESPONSE:\\n{response}<|endoftext|>

(the template uses only characters that tiny Shakespeare's char tokenizer knows, and looks like
the corpus's own "SPEAKER:" lines). The model learns to write the response and then end-of-text,
so sampling stops by itself at eos. The loss counts only the response tokens and the eos: a
target whose token belongs to the prompt part (template included) is ``IGNORE`` (-100).

Classification, lines ``{"text": ..., "label": ...}``: ids = encode(text) + [eos] (the eos
position, whose hidden state has seen the whole text, feeds the classifier head); labels become
ids in order of first appearance in the training split.

Truncation to the model's context of T = block_size positions:
- SFT uses T + 1 tokens (inputs are ids[:-1], targets ids[1:]). If an example is longer, the
  prompt is cut from the left (its end and the "RESPONSE:" marker stay next to the response),
  keeping at least half the window, and the response is cut from the right (losing the eos).
- Classification keeps the last T tokens (so the final eos and the end of the text stay).

Batches are right-padded to their longest row. Pad targets are IGNORE, and since attention is
causal, pad positions to the right never change the real positions' outputs.
"""

import json
from pathlib import Path

import numpy as np

from minillm.errors import DataError, MinillmError

IGNORE = -100
SFT_TEMPLATE = "PROMPT:\n{prompt}\nRESPONSE:\n"


class JSONLError(DataError):
    """A line of a JSONL file that is not a JSON object with the needed keys."""


class LabelError(DataError):
    """A label that the classifier was not trained on."""


def read_jsonl(path, keys):
    """[(line_number, record), ...] from a JSONL file; every record must be an object whose
    ``keys`` are strings (labels may also be numbers or booleans: they are turned into strings).
    Blank lines are skipped. Errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    out = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            if any("\udc80" <= ch <= "\udcff" for ch in line):
                raise JSONLError(f"{path} line {n} is not UTF-8 text (is it a binary file?)")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise JSONLError(f"{path} line {n} is not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise JSONLError(f"{path} line {n} is not a JSON object")
            missing = [k for k in keys if k not in rec]
            if missing:
                has = ", ".join(map(repr, rec)) or "none"
                raise JSONLError(
                    f"{path} line {n} lacks the key{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(k) for k in missing)} (it has {has})"
                )
            for k in keys:
                v = rec[k]
                if k == "label" and isinstance(v, (bool, int, float)):
                    rec[k] = str(v)
                elif not isinstance(v, str):
                    raise JSONLError(
                        f"{path} line {n}: {k!r} must be a string, got {type(v).__name__}"
                    )
            out.append((n, rec))
    if not out:
        raise DataError(f"{path} holds no examples")
    return out


def _encode(tokenizer, text, path, n):
    try:
        return tokenizer.encode(text)
    except MinillmError as e:
        raise DataError(f"{path} line {n}: {e}") from None


# ----------------------------------------------------------------------------- SFT
def sft_example(tokenizer, prompt, response, block_size):
    """(ids, n_prompt): the templated token ids (at most block_size + 1) and how many of them
    belong to the prompt part. See the module docstring for the truncation rule."""
    p = tokenizer.encode(SFT_TEMPLATE.format(prompt=prompt))
    r = tokenizer.encode(response) + [tokenizer.eos_id]
    limit = block_size + 1
    if len(p) + len(r) > limit:
        keep_p = min(len(p), max(limit - len(r), limit // 2))
        p, r = p[len(p) - keep_p :], r[: limit - keep_p]
    return p + r, len(p)


def sft_targets(ids, n_prompt):
    """(x, y) for one example: x = ids[:-1], y = ids[1:] with prompt targets -> IGNORE.
    y[t] predicts ids[t + 1], which is a prompt token when t + 1 < n_prompt."""
    x = np.asarray(ids[:-1], dtype=np.int64)  # (L,)
    y = np.asarray(ids[1:], dtype=np.int64)  # (L,)
    y[: max(n_prompt - 1, 0)] = IGNORE
    return x, y


def load_sft(path, tokenizer, block_size):
    """[(x, y), ...] for every line of an SFT JSONL file."""
    out = []
    for n, rec in read_jsonl(path, ("prompt", "response")):
        try:
            ids, n_prompt = sft_example(tokenizer, rec["prompt"], rec["response"], block_size)
        except MinillmError as e:  # e.g. a character the tokenizer does not know
            raise DataError(f"{path} line {n}: {e}") from None
        out.append(sft_targets(ids, n_prompt))
    return out


def pad_batch(examples, pad_id):
    """[(x (L_i,), y (L_i,)), ...] -> x (B, L) padded with pad_id, y (B, L) padded with IGNORE."""
    L = max(len(x) for x, _ in examples)
    xb = np.full((len(examples), L), pad_id, dtype=np.int64)
    yb = np.full((len(examples), L), IGNORE, dtype=np.int64)
    for i, (x, y) in enumerate(examples):
        xb[i, : len(x)], yb[i, : len(y)] = x, y
    return xb, yb


# ----------------------------------------------------------------------------- classification
def load_classify(path, tokenizer, block_size, labels=None):
    """(examples, labels): examples [(ids, label_id, line), ...]. With ``labels`` given (the
    training label list), a label outside it is a LabelError; otherwise the list is built in
    order of first appearance."""
    records = read_jsonl(path, ("text", "label"))
    fixed = labels is not None
    labels = list(labels) if fixed else []
    index = {lab: i for i, lab in enumerate(labels)}
    out = []
    for n, rec in records:
        lab = rec["label"]
        if lab not in index:
            if fixed:
                raise LabelError(
                    f"{path} line {n} has label {lab!r}, which the classifier was not "
                    f"trained on (known: {', '.join(map(repr, labels))})"
                )
            index[lab] = len(labels)
            labels.append(lab)
        ids = classify_ids(tokenizer, _encode(tokenizer, rec["text"], path, n), block_size)
        out.append((ids, index[lab], n))
    return out, labels


def classify_ids(tokenizer, ids, block_size):
    """text ids -> ids + [eos], keeping the last block_size tokens."""
    return (list(ids) + [tokenizer.eos_id])[-block_size:]


def classify_batch(seqs, pad_id):
    """[ids, ...] -> (x (B, L) right-padded, last (B,) index of each row's last real token)."""
    L = max(len(s) for s in seqs)
    x = np.full((len(seqs), L), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return x, np.array([len(s) - 1 for s in seqs], dtype=np.int64)


# ----------------------------------------------------------------------------- splitting
def split_indices(n, val_fraction, rng, groups=None):
    """(train, val) index arrays. With ``groups`` (e.g. class ids), each group is split on its own
    (stratified), keeping at least one example of every group in training."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    train, val = [], []
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        k = min(int(round(len(idx) * val_fraction)), len(idx) - 1)
        if val_fraction > 0 and k == 0 and len(idx) > 1 and groups.max() == 0:
            k = 1  # an unstratified split of a tiny file still gets one val example
        val.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
