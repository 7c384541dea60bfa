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

Token ids: ``generate_ids`` is the same loop with Hugging Face's ``generate`` semantics (ids in,
(B * num_return_sequences, T + new) ids out, eos kept and the row padded after it, max_length
counting the input). ``model.generate`` (registered here into ``minillm.models.generation``)
runs it with Hugging Face's defaults (greedy, max_length 20); ``generate`` runs it when given
ids instead of text, with this module's defaults (MAX_NEW_TOKENS, TEMPERATURE, TOP_K), which
are also the CLI's.

Conversations (``minillm chat``) live in ``minillm.chat``, on top of this module's sampling step.
"""

import numpy as np

from minillm import backend
from minillm.autograd import no_grad
from minillm.errors import MinillmError, TokenizerError
from minillm.models import generation

# The defaults of minillm.generate and of `minillm sample` (the CLI reads them from here).
MAX_NEW_TOKENS = 256
TEMPERATURE = 0.8
TOP_K = 200


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
        # a tokenizer whose ids' bytes join (byte-level BPE) adds each new id's bytes; others
        # decode every id again at each token (SentencePiece drops the first piece's space).
        # SmolLM2, us per token: 6.1 (64 tokens) and 6.7 (512) against 16.1 and 86.4
        self.raw = b"" if getattr(tokenizer, "bytes_join", False) else None

    def _text(self):
        if self.raw is None:
            return self.tokenizer.decode(self.ids)
        return self.raw.decode("utf-8", errors="replace")

    def push(self, token):
        """Add one generated id; return the text that is now certain ('' if none)."""
        self.ids.append(int(token))
        if self.raw is not None:
            self.raw += self.tokenizer.decode_bytes(self.ids[-1:])
        text = self._text()
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
        return self._emit(self._text())

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


def _decode(model, ids, mask, max_new_tokens, temperature, top_k, top_p, greedy, rng,
            repetition_penalty, use_cache, vocab_limit):
    """Yield the next ids (B,) int64, one step at a time, for the left-padded context ``ids``,
    ``mask`` (B, N). The caller may overwrite entries of each yielded array (rows that have
    finished) before asking for the next step; what the array then holds is appended."""
    B, N = ids.shape
    V = model.config.vocab_size
    seen = np.zeros((B, V), dtype=bool)  # (B, V) for the repetition penalty
    for b in range(B):
        seen[b, ids[b][mask[b]]] = True
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
                logits[:, vocab_limit:] = -np.inf  # ids the tokenizer cannot decode
                logits = apply_repetition_penalty(logits, seen, repetition_penalty)
                nxt = sample_next(logits, rng, temperature, top_k, top_p, greedy)  # (B,)
                yield nxt
                seen[np.arange(B), nxt] = True
                ids = np.concatenate([ids, nxt[:, None]], axis=1)  # (B, N + 1)
                mask = np.concatenate([mask, np.ones((B, 1), dtype=bool)], axis=1)
                new = 1 if use_cache else 0
    finally:
        model.train(was_training)


def _left_padded(rows, pad_id):
    """Lists of ids -> ids (B, N) left-padded with ``pad_id``, mask (B, N) True at real ids."""
    B, N = len(rows), max(map(len, rows))
    ids = np.full((B, N), pad_id, dtype=np.int64)
    mask = np.zeros((B, N), dtype=bool)
    for b, r in enumerate(rows):
        ids[b, N - len(r):], mask[b, N - len(r):] = r, True
    return ids, mask


def _generate_rows(model, tokenizer, prompts, max_new_tokens, temperature, top_k, top_p,
                   greedy, seed, stop, repetition_penalty, use_cache):
    """Yield (row, piece) as text becomes certain; the core of ``generate`` and ``stream``."""
    check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise MinillmError("each stop sequence must be a non-empty string.")
    _check_vocab(model, tokenizer)
    rows = [_encode(tokenizer, p) for p in prompts]
    if max_new_tokens == 0 or not rows:
        return
    ids, mask = _left_padded(rows, tokenizer.eos_id)
    trackers = [_TextTracker(tokenizer, stops) for _ in rows]
    steps = _decode(model, ids, mask, max_new_tokens, temperature, top_k, top_p, greedy,
                    np.random.default_rng(seed), repetition_penalty, use_cache,
                    tokenizer.vocab_size)
    try:
        for nxt in steps:
            for b, t in enumerate(trackers):
                if t.done:
                    nxt[b] = tokenizer.eos_id  # finished rows are fed eos, ignored
                    continue
                if nxt[b] == tokenizer.eos_id:
                    t.done = True
                    piece = t.finish()
                else:
                    piece = t.push(nxt[b])
                if piece:
                    yield b, piece
            if all(t.done for t in trackers):
                return
        for b, t in enumerate(trackers):
            if not t.done:
                piece = t.finish()
                if piece:
                    yield b, piece
    finally:
        steps.close()


def _check_vocab(model, tokenizer):
    if tokenizer.vocab_size > model.config.vocab_size:
        raise MinillmError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                           f"{model.config.vocab_size}; they do not belong together.")


# ----------------------------------------------------------------------------- token ids
def as_id_batch(input_ids):
    """Token ids as a (B, T) int64 array: a list of ints, a list of equally long lists, or a
    NumPy array or Tensor of shape (T,) or (B, T)."""
    data = getattr(input_ids, "data", input_ids)  # a Tensor's array
    data = backend.to_numpy(data) if backend.is_cupy(data) else data
    try:
        arr = np.asarray(data)
    except ValueError:
        arr = np.asarray(data, dtype=object)
    if arr.dtype == object:
        raise MinillmError("token-id rows of different lengths: pad them (tokenizer(texts, "
                           "padding=True) gives input_ids and an attention_mask) or pass one "
                           "row at a time.")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or (arr.size and arr.dtype.kind not in "iu"):
        raise MinillmError(f"token ids must be integers of shape (T,) or (batch, T), got "
                           f"{arr.dtype} of shape {arr.shape}.")
    if arr.shape[1] == 0:
        raise MinillmError("the input needs at least one token id.")
    return arr.astype(np.int64)


def generate_ids(model, input_ids, attention_mask=None, max_new_tokens=None, max_length=None,
                 do_sample=True, temperature=1.0, top_k=None, top_p=None,
                 num_return_sequences=1, eos_token_id=None, pad_token_id=None,
                 repetition_penalty=1.0, rng=None, use_cache=True, vocab_limit=None):
    """Token ids in, token ids out, with Hugging Face's ``generate`` semantics: the result is
    (B * num_return_sequences, T + steps) int64, each input row followed by its new ids (the
    ``num_return_sequences`` copies of a row side by side). A row ends at any id in
    ``eos_token_id`` (kept in the output); after that it holds ``pad_token_id`` (default: the
    first eos id). Generation stops when every row has ended or after ``max_new_tokens``
    (``max_length`` counts the input too; max_new_tokens wins when both are given).
    ``attention_mask`` (B, T): 0 at padding, which must be on the left. ``do_sample=False``
    is greedy. ``rng``: a NumPy Generator (default: minillm's seeded one, ``manual_seed``).
    ``vocab_limit``: ids at or past it are never drawn (default: the model's vocabulary)."""
    ids = as_id_batch(input_ids)
    B, T = ids.shape
    if attention_mask is None:
        mask = np.ones((B, T), dtype=bool)
    else:
        mask = as_id_batch(attention_mask).astype(bool)
        if mask.shape != ids.shape:
            raise MinillmError(f"attention_mask has shape {mask.shape}, input_ids {ids.shape}.")
        if (mask[:, 1:] < mask[:, :-1]).any():
            raise MinillmError("the attention mask has padding on the right; pad on the left "
                               "for generation (tokenizer(..., padding_side='left')).")
        if not mask[:, -1].all():
            raise MinillmError("a row of the attention mask is all padding.")
    if max_new_tokens is None:
        if max_length is None:
            raise MinillmError("pass max_new_tokens (or max_length, which counts the input).")
        max_new_tokens = max_length - T
        if max_new_tokens < 1:
            raise MinillmError(f"max_length={max_length} leaves no room after the {T} input "
                               f"tokens; raise it or pass max_new_tokens.")
    greedy = not do_sample
    n = num_return_sequences
    if int(n) != n or n < 1:
        raise MinillmError(f"num_return_sequences must be a whole number >= 1, got {n}.")
    if greedy and n > 1:
        raise MinillmError("greedy decoding gives one sequence per input; pass do_sample=True "
                           "for num_return_sequences > 1.")
    check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    V = model.config.vocab_size
    if (ids[mask] < 0).any() or (ids[mask] >= V).any():
        raise MinillmError(f"token ids must lie in 0..{V - 1} (the model's vocabulary).")
    eos = {eos_token_id} if isinstance(eos_token_id, (int, np.integer)) else set(eos_token_id or ())
    if pad_token_id is None:
        pad_token_id = next(iter(sorted(eos)), 0) if eos else 0
    ids, mask = np.repeat(ids, n, axis=0), np.repeat(mask, n, axis=0)  # (B n, T)
    out = [ids]
    done = np.zeros(len(ids), dtype=bool)
    steps = _decode(model, ids, mask, int(max_new_tokens), temperature, top_k, top_p, greedy,
                    backend.rng() if rng is None else rng, repetition_penalty, use_cache,
                    V if vocab_limit is None else vocab_limit)
    try:
        for nxt in steps:
            nxt[done] = pad_token_id
            out.append(nxt[:, None].copy())
            done |= np.isin(nxt, list(eos))
            if done.all():
                break
    finally:
        steps.close()
    return np.concatenate(out, axis=1)  # (B n, T + steps)


def _is_ids(prompt):
    """Whether a prompt is token ids (ints, rows of ints, an array or Tensor), not text."""
    if isinstance(prompt, str):
        return False
    if hasattr(prompt, "shape"):
        return True
    first = next(iter(prompt), None) if isinstance(prompt, (list, tuple)) else None
    while isinstance(first, (list, tuple)):
        first = first[0] if first else None
    return isinstance(first, (int, np.integer))


# ----------------------------------------------------------------------------- the API
def _resolve(tokenizer, prompts, max_new_tokens, max_length, do_sample, greedy):
    """(max_new_tokens, greedy) from the two ways of saying each."""
    if do_sample is not None:
        if greedy and do_sample:
            raise MinillmError("greedy=True and do_sample=True contradict each other.")
        greedy = not do_sample
    if max_new_tokens is None:
        if max_length is None:
            max_new_tokens = MAX_NEW_TOKENS
        else:  # max_length counts the prompt too (Hugging Face's meaning)
            longest = max((len(_encode(tokenizer, p)) for p in prompts), default=0)
            max_new_tokens = max_length - longest
            if max_new_tokens < 1:
                raise MinillmError(f"max_length={max_length} leaves no room after the prompt "
                                   f"({longest} tokens); raise it or pass max_new_tokens.")
    return max_new_tokens, greedy


def generate(model, tokenizer, prompt, max_new_tokens=None, temperature=TEMPERATURE, top_k=TOP_K,
             top_p=None, greedy=False, seed=None, stop=None, repetition_penalty=1.0,
             use_cache=True, *, max_length=None, do_sample=None, num_return_sequences=1,
             eos_token_id=None, pad_token_id=None, attention_mask=None):
    """The continuation of ``prompt``: a str gives a str, a list of str a list (batched).

    Token ids (a list of ints, an array or Tensor of shape (T,) or (B, T)) give token ids
    instead, as Hugging Face's ``model.generate``: (B * num_return_sequences, T + new) with the
    prompt first; ``tokenizer`` may then be None (no eos stop unless ``eos_token_id``).
    The defaults are the CLI's (``minillm sample``): 256 new tokens (MAX_NEW_TOKENS),
    temperature 0.8, top_k 200. ``max_length`` counts the prompt too; ``do_sample=False`` is
    ``greedy=True``; ``num_return_sequences`` > 1 gives a list of that many texts per prompt.
    See the module docstring for the rest."""
    n = num_return_sequences
    if _is_ids(prompt):
        if stop is not None:
            raise MinillmError("stop strings apply to text prompts; with token ids pass "
                               "eos_token_id.")
        if greedy and do_sample:
            raise MinillmError("greedy=True and do_sample=True contradict each other.")
        if max_new_tokens is None and max_length is None:
            max_new_tokens = MAX_NEW_TOKENS
        if tokenizer is not None:
            _check_vocab(model, tokenizer)
            if eos_token_id is None:
                eos_token_id = tokenizer.eos_id
        sample = not greedy if do_sample is None else do_sample
        return generate_ids(
            model, prompt, attention_mask, max_new_tokens, max_length, sample, temperature,
            top_k, top_p, n, eos_token_id, pad_token_id, repetition_penalty,
            np.random.default_rng(seed), use_cache,
            None if tokenizer is None else tokenizer.vocab_size)
    if tokenizer is None:
        raise MinillmError("a text prompt needs the tokenizer; pass token ids to go without.")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    max_new_tokens, greedy = _resolve(tokenizer, prompts, max_new_tokens, max_length,
                                      do_sample, greedy)
    if int(n) != n or n < 1:
        raise MinillmError(f"num_return_sequences must be a whole number >= 1, got {n}.")
    if greedy and n > 1:
        raise MinillmError("greedy decoding gives one text per prompt; sample (do_sample=True) "
                           "for num_return_sequences > 1.")
    rows = [p for p in prompts for _ in range(n)]  # each prompt n times, side by side
    out = [""] * len(rows)
    for b, piece in _generate_rows(model, tokenizer, rows, max_new_tokens, temperature,
                                   top_k, top_p, greedy, seed, stop, repetition_penalty,
                                   use_cache):
        out[b] += piece
    if n > 1:
        out = [out[i:i + n] for i in range(0, len(out), n)]
    return out[0] if isinstance(prompt, str) else out


def stream(model, tokenizer, prompt, max_new_tokens=MAX_NEW_TOKENS, temperature=TEMPERATURE,
           top_k=TOP_K, top_p=None, greedy=False, seed=None, stop=None, repetition_penalty=1.0,
           use_cache=True):
    """Like ``generate`` for one prompt, but yields the text piece by piece as it is produced;
    the pieces join to exactly what ``generate`` returns with the same arguments."""
    if not isinstance(prompt, str):
        raise MinillmError("stream takes one prompt (a string); use generate for a list.")
    for _, piece in _generate_rows(model, tokenizer, [prompt], max_new_tokens, temperature,
                                   top_k, top_p, greedy, seed, stop, repetition_penalty,
                                   use_cache):
        yield piece


def _model_generate(model, input_ids, **options):
    """``model.generate``: Hugging Face's defaults (greedy, max_length 20, top_k 50 when
    sampling, eos from the model's config), then ``generate_ids``."""
    c = model.config
    seed = options.pop("seed", None)
    o = dict(do_sample=False, temperature=1.0, top_k=50, top_p=1.0,
             eos_token_id=getattr(c, "eos_token_id", None),
             pad_token_id=getattr(c, "pad_token_id", None))
    o.update(options)
    if o.get("max_new_tokens") is None and o.get("max_length") is None:
        o["max_length"] = 20
    if o["top_k"] == 0:
        o["top_k"] = None  # Hugging Face's 0: no top-k
    return generate_ids(model, input_ids, rng=None if seed is None else
                        np.random.default_rng(seed), **o)


generation.register(_model_generate)
