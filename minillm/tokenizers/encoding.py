"""What calling a tokenizer returns, as in Hugging Face: ``tok("text")`` or ``tok(["a", "b"])``
-> a ``BatchEncoding`` holding ``input_ids`` and ``attention_mask`` (1 at real tokens, 0 at
padding), as lists, or as NumPy arrays with ``return_tensors="np"``.

Padding (``padding=True`` or "longest": to the longest row; "max_length": to ``max_length``)
uses the tokenizer's ``pad_id``, or ``eos_id`` when it has none (GPT-2's habit). It goes on
``padding_side``: "left" by default here, because left padding is what batched generation
needs (``model.generate`` refuses right padding); set ``tok.padding_side = "right"`` for
Hugging Face's default. ``truncation=True`` with ``max_length`` keeps the first tokens.
"""

from __future__ import annotations

import numpy as np

from minillm.errors import TokenizerError


class BatchEncoding(dict):
    """A dict of ``input_ids`` and ``attention_mask`` whose keys are also attributes
    (``enc.input_ids``), so ``model.generate(**enc)`` works."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def encode_batch(tokenizer, text, return_tensors=None, padding=False, truncation=False,
                 max_length=None, padding_side=None):
    """``Tokenizer.__call__``: see the module docstring."""
    single = isinstance(text, str)
    texts = [text] if single else list(text)
    if not all(isinstance(t, str) for t in texts):
        raise TokenizerError("a tokenizer takes a string or a list of strings.")
    if return_tensors not in (None, "np"):
        raise TokenizerError(f"return_tensors={return_tensors!r} is not available; minillm "
                             f"returns NumPy arrays (\"np\") or lists (None).")
    if padding not in (False, True, "longest", "max_length", "do_not_pad"):
        raise TokenizerError(f"padding must be True, 'longest', 'max_length' or False, got "
                             f"{padding!r}.")
    side = padding_side or getattr(tokenizer, "padding_side", "left")
    if side not in ("left", "right"):
        raise TokenizerError(f"padding_side must be 'left' or 'right', got {side!r}.")
    if (truncation or padding == "max_length") and (max_length is None or max_length < 1):
        raise TokenizerError("truncation and padding='max_length' need max_length >= 1.")
    rows = [tokenizer.encode(t) for t in texts]
    if truncation:
        rows = [r[:max_length] for r in rows]
    width = None
    if padding in (True, "longest"):
        width = max((len(r) for r in rows), default=0)
    elif padding == "max_length":
        width = max([max_length, *(len(r) for r in rows)])
    masks = [[1] * len(r) for r in rows]
    if width is not None:
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        for i, r in enumerate(rows):
            fill = width - len(r)
            if side == "left":
                rows[i], masks[i] = [pad] * fill + r, [0] * fill + masks[i]
            else:
                rows[i], masks[i] = r + [pad] * fill, masks[i] + [0] * fill
    if return_tensors == "np":
        if len({len(r) for r in rows}) > 1:
            raise TokenizerError("the texts give different lengths; pass padding=True to make "
                                 "one array.")
        ids = np.array(rows, dtype=np.int64).reshape(len(rows), -1)  # (B, T)
        return BatchEncoding(input_ids=ids, attention_mask=np.array(masks, dtype=np.int64)
                             .reshape(ids.shape))
    if single:
        return BatchEncoding(input_ids=rows[0], attention_mask=masks[0])
    return BatchEncoding(input_ids=rows, attention_mask=masks)
