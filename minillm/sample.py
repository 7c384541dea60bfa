"""Text generation: the sampler (temperature, top-k, top-p, repetition penalty) and the
generate loop with a KV cache, as one Python API: ``generate`` returns text, ``stream`` yields it.

    model, tok = minillm.load("out/shakespeare_char")
    print(generate(model, tok, "ROMEO:", max_new_tokens=200, temperature=0.8, top_k=200, seed=1))
    for piece in stream(model, tok, "ROMEO:", stop="\\n\\n"):
        print(piece, end="", flush=True)

Sampling, one step (the order of Hugging Face's logits processors):
  1. repetition penalty (Keskar et al. 2019, CTRL): the logit of every token already seen (prompt
     and generated) is divided by ``repetition_penalty`` when positive, multiplied when negative;
  2. temperature 0 or ``greedy`` -> argmax (so is ``top_k=1``); otherwise logits / temperature;
  3. top-k keeps the k largest logits (ties with the k-th are kept, as Hugging Face does);
  4. top-p (nucleus, Holtzman et al. 2019) keeps the smallest set of most probable tokens whose
     probability sums to at least p (always at least one token), renormalised;
  5. one draw from that distribution with a NumPy Generator seeded by ``seed`` (None -> fresh
     entropy), so the same seed gives the same text.
Ids past the tokenizer's vocabulary (a model vocabulary padded beyond it, as nanoGPT pads GPT-2's
50257 to 50304) are never drawn.

Stopping: at ``eos_id`` (not part of the text), after ``max_new_tokens``, or when the generated
text contains one of the ``stop`` strings; the text ends just before the stop string.
An empty prompt starts from ``tokenizer.bos_id`` (for the char tokenizer this is its one special
token, ``<|endoftext|>``, which is also ``eos_id``); that token is not part of the output.

KV cache (``use_cache=True``): the prompt is run once (prefill) and every new token costs one
position of attention: a (B, 1) forward that appends its keys and values to the cache.
Context window: the model sees at most ``block_size`` tokens, the last ones (nanoGPT crops the
same way). Without the cache every step simply runs the last ``block_size`` tokens. With it,
once the cache holds ``block_size`` positions the window must slide, and because GPT-2's
position embeddings are absolute, a key computed at position j is wrong once its token sits at
j - 1: nothing in the cache can be reused. So each step past a full window re-runs the last
``block_size`` tokens from an empty cache: the same computation as the no-cache path (the same
tokens, bit for bit), at the no-cache cost. Below ``block_size`` the cache path costs one
position per token; the two paths agree to float32 rounding (tests/test_sample.py).

Batches: a list of prompts is left-padded to one length; an attention mask hides the padding and
position ids restart at 0 at each row's first real token, so each row generates what it would
alone (up to float32 rounding). Rows that finish keep being fed ``eos_id``, which is ignored.

Conversations (``minillm chat``) live in ``minillm.chat``, on top of this module's sampling step.
"""

import numpy as np

from minillm import backend
from minillm.autograd import no_grad
from minillm.errors import MinillmError, TokenizerError


# ----------------------------------------------------------------------------- one step
def filter_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution to sample from: softmax(logits / T) after top-k then top-p filtering.

    logits: (..., V) -> probabilities (..., V) float64, zero outside the kept set, summing to 1.
    temperature must be > 0 here (0 means argmax, handled by ``sample_next``).
    """
    z = np.asarray(logits, dtype=np.float64) / temperature  # (..., V)
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[..., V - top_k : V - top_k + 1]  # (..., 1)
        z = np.where(z < kth, -np.inf, z)  # ties with the k-th largest survive
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)  # (..., V)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")  # (..., V) most probable first
        p_sorted = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(p_sorted, axis=-1) - p_sorted  # mass of the more probable tokens
        keep_sorted = before < top_p  # the first token always has before == 0 < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def sample_next(logits, rng, temperature=1.0, top_k=None, top_p=None, greedy=False):
    """Next token ids from logits (B, V) -> (B,) int64 (or (V,) -> int).

    Greedy (``greedy``, temperature 0 or top_k 1) takes the argmax and draws nothing from
    ``rng``; otherwise one uniform per row picks a token by inverse CDF of ``filter_probs``.
    """
    logits = np.asarray(logits)
    single = logits.ndim == 1
    logits = logits[None] if single else logits  # (B, V)
    if greedy or temperature == 0 or top_k == 1:
        ids = logits.argmax(axis=-1)  # (B,)
    else:
        p = filter_probs(logits, temperature, top_k, top_p)  # (B, V)
        cdf = np.cumsum(p, axis=-1)  # (B, V)
        u = rng.random(len(p))[:, None] * cdf[:, -1:]  # (B, 1) in [0, total)
        # the first i with cdf[i] > u: a token of probability 0 can never be picked
        ids = np.minimum((cdf <= u).sum(axis=-1), p.shape[-1] - 1)  # (B,)
    ids = ids.astype(np.int64)
    return int(ids[0]) if single else ids


def apply_repetition_penalty(logits, seen, penalty):
    """CTRL's penalty: logits (B, V) of tokens marked in ``seen`` (B, V) bool are divided by
    ``penalty`` when positive and multiplied by it when negative (so always made less likely)."""
    if penalty == 1.0:
        return logits
    hit = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, hit, logits)


def check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty):
    """Raise MinillmError (one sentence) for a sampling setting that makes no sense."""
    if max_new_tokens is None or int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
        raise MinillmError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens}.")
    if not temperature >= 0:  # also catches NaN
        raise MinillmError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise MinillmError(f"top_k must be a whole number >= 1 (None: no limit), got {top_k}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise MinillmError(f"top_p must be in (0, 1], got {top_p}.")
    if not repetition_penalty > 0:
        raise MinillmError(
            f"repetition_penalty must be > 0 (1 means none), got {repetition_penalty}."
        )


# ----------------------------------------------------------------------------- text out
class _TextTracker:
    """Turns one row's new token ids into text pieces, incrementally and stop-string aware.

    Each piece is a new suffix of decode(all new ids), but text that may still change is held
    back: a trailing U+FFFD (a multi-byte character whose bytes have not all arrived) and a
    trailing partial match of a stop string. So the pieces always join to the final text.
    """

    def __init__(self, tokenizer, stops):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids, self.emitted, self.done = [], "", False

    def push(self, token):
        """Add one generated id; return the text that is now certain ('' if none)."""
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids)
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.done = True
            return self._emit(text[: min(hits)])
        stable = text.rstrip("\ufffd")
        hold = max((k for s in self.stops for k in range(1, len(s))
                    if stable.endswith(s[:k])), default=0)
        return self._emit(stable[: len(stable) - hold])

    def finish(self):
        """Generation ended without a stop string: everything decoded so far is final."""
        return self._emit(self.tokenizer.decode(self.ids))

    def _emit(self, text):
        piece = text[len(self.emitted):] if len(text) > len(self.emitted) else ""
        self.emitted += piece
        return piece


# ----------------------------------------------------------------------------- the loop
def _encode(tokenizer, prompt):
    if not isinstance(prompt, str):
        raise MinillmError(f"a prompt must be a string, got {type(prompt).__name__}.")
    try:
        ids = tokenizer.encode(prompt)
    except TokenizerError as e:
        raise MinillmError(f"cannot encode the prompt: {e}") from None
    return ids or [tokenizer.bos_id]  # an empty prompt starts from the bos token


def _forward(model, ids, mask, cache, new):
    """Logits (B, V) for the next token. ids, mask: (B, N) the whole padded context.
    ``new`` > 0: feed only the last ``new`` columns through ``cache`` (which holds the rest)."""
    block = model.config.block_size
    N = ids.shape[1]
    if cache is not None and (new == 0 or cache.length + new > block):
        cache.reset()  # (re)fill: no cache yet, or the window must slide (see module docstring)
    filled = cache.length if cache is not None else 0
    if filled == 0:  # run the whole window: the last `block` columns
        start, first = max(0, N - block), 0
    else:  # the cache holds the window's first `filled` columns; run the `new` ones after them
        start, first = N - filled - new, filled
    m = mask[:, start:]  # (B, Tk) the keys this step attends over
    pos = np.maximum(np.cumsum(m, axis=1) - 1, 0)  # (B, Tk) 0 at each row's first real token
    like = next(iter(model.parameters())).data  # where the weights live (GPT and Llama alike)
    to_dev = (lambda a: backend.to_device(a, "cuda")) if backend.is_cupy(like) else (lambda a: a)
    logits, _ = model(
        to_dev(ids[:, start + first:]), kv_cache=cache, last_only=True,  # (B, T) fed columns
        attention_mask=None if m.all() else m,  # no padding -> the fused attention kernel
        position_ids=to_dev(pos[:, first:]),  # (B, T)
    )
    return backend.to_numpy(logits.data)[:, -1, :].astype(np.float64)  # (B, V)


def _generate_rows(model, tokenizer, prompts, max_new_tokens, temperature, top_k, top_p,
                   greedy, seed, stop, repetition_penalty, use_cache):
    """Yield (row, piece) as text becomes certain; the core of ``generate`` and ``stream``."""
    check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise MinillmError("each stop sequence must be a non-empty string.")
    V = model.config.vocab_size
    if tokenizer.vocab_size > V:
        raise MinillmError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                           f"{V}; they do not belong together.")
    rows = [_encode(tokenizer, p) for p in prompts]
    if max_new_tokens == 0 or not rows:
        return
    B, N = len(rows), max(map(len, rows))
    ids = np.full((B, N), tokenizer.eos_id, dtype=np.int64)  # (B, N) left-padded
    mask = np.zeros((B, N), dtype=bool)  # (B, N) True at real tokens
    seen = np.zeros((B, V), dtype=bool)  # (B, V) for the repetition penalty
    for b, r in enumerate(rows):
        ids[b, N - len(r):], mask[b, N - len(r):] = r, True
        seen[b, r] = True
    rng = np.random.default_rng(seed)
    trackers = [_TextTracker(tokenizer, stops) for _ in rows]
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            cache = None
            if use_cache:
                cache = model.new_kv_cache(B, max_len=min(model.config.block_size,
                                                          N + max_new_tokens))
            new = 0  # 0: run the whole window (prefill); then one new column per step
            for _ in range(max_new_tokens):
                logits = _forward(model, ids, mask, cache, new)  # (B, V)
                logits[:, tokenizer.vocab_size:] = -np.inf  # ids the tokenizer cannot decode
                logits = apply_repetition_penalty(logits, seen, repetition_penalty)
                nxt = sample_next(logits, rng, temperature, top_k, top_p, greedy)  # (B,)
                for b, t in enumerate(trackers):
                    if t.done:
                        nxt[b] = tokenizer.eos_id  # finished rows are fed eos, ignored
                        continue
                    if nxt[b] == tokenizer.eos_id:
                        t.done = True
                        piece = t.finish()
                    else:
                        seen[b, nxt[b]] = True
                        piece = t.push(nxt[b])
                    if piece:
                        yield b, piece
                if all(t.done for t in trackers):
                    return
                ids = np.concatenate([ids, nxt[:, None]], axis=1)  # (B, N + 1)
                mask = np.concatenate([mask, np.ones((B, 1), dtype=bool)], axis=1)
                new = 1 if use_cache else 0
            for b, t in enumerate(trackers):
                if not t.done:
                    piece = t.finish()
                    if piece:
                        yield b, piece
    finally:
        model.train(was_training)


def generate(model, tokenizer, prompt, max_new_tokens=256, temperature=1.0, top_k=None,
             top_p=None, greedy=False, seed=None, stop=None, repetition_penalty=1.0,
             use_cache=True):
    """The continuation of ``prompt`` (str -> str; a list of prompts -> list of str, batched).
    See the module docstring for the meaning of each option."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    out = [""] * len(prompts)
    for b, piece in _generate_rows(model, tokenizer, prompts, max_new_tokens, temperature,
                                   top_k, top_p, greedy, seed, stop, repetition_penalty,
                                   use_cache):
        out[b] += piece
    return out[0] if isinstance(prompt, str) else out


def stream(model, tokenizer, prompt, max_new_tokens=256, temperature=1.0, top_k=None,
           top_p=None, greedy=False, seed=None, stop=None, repetition_penalty=1.0,
           use_cache=True):
    """Like ``generate`` for one prompt, but yields the text piece by piece as it is produced;
    the pieces join to exactly what ``generate`` returns with the same arguments."""
    if not isinstance(prompt, str):
        raise MinillmError("stream takes one prompt (a string); use generate for a list.")
    for _, piece in _generate_rows(model, tokenizer, [prompt], max_new_tokens, temperature,
                                   top_k, top_p, greedy, seed, stop, repetition_penalty,
                                   use_cache):
        yield piece

