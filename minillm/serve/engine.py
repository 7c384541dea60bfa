"""The generation engine behind ``minillm serve``: continuous batching on one thread.

Requests arrive through a bounded queue (``submit``; a full queue raises ``QueueFull``, which
the HTTP layer answers with 503). One engine thread loops:

1. admit waiting requests while the batch has free rows and prefill their prompts (an idle
   engine first waits ``batch_wait`` for more to come: clients that start together share one
   prefill; identical prompts among them are computed once); those that arrived together run
   as one batch through an ordinary ``model.new_kv_cache``, packed end to end without padding
   (a Llama on the CPU: ``prefill_packed``) or right-padded (up to PREFILL_TOKENS positions,
   padding counted; a request that wants its prompt's log-probabilities runs alone), each
   first token is sampled from its last real position, and each prompt's keys and values are
   copied into a free row of the ``RaggedKVCache``;
2. one decode step over every row in the batch: (B, 1) tokens, each at its own position, with
   the attention mask hiding what belongs to longer rows (see minillm.serve.kvcache; a Llama
   on the CPU reads each row's keys up to its own length, attention_ragged_forward);
3. sample each row's next token with that request's own sampler state; requests that finish
   (an end token, a stop string, their token budget) or were cancelled leave the batch and
   their row is given to the last one.

So a request joins the running batch at the step after its prefill and the others never wait
for it to finish; clients that arrive together wait for one prefill pass, not one each. Each
request draws from its own ``numpy.random.Generator`` (seeded by its ``seed``), in the order
of its own tokens, so its text does not depend on what else is in the batch; the logits do,
by float32 rounding only (a batched matmul sums in another order), which the tests keep clear
of by using greedy decoding on weights whose top-2 logit gaps are large.

Every model call runs on the engine thread. Nothing else in the process should run the model
(or any of minillm's parallel kernels) while it serves: once a second thread has, the engine
thread's decode steps take about twice as long (benchmarks/second_thread.py).

Results leave through each request's ``sink(event, payload)``, called on the engine thread
(the HTTP layer forwards them into its event loop with ``call_soon_threadsafe``):
``("prompt", PromptLogprobs)`` once when prompt log-probabilities were asked for, then
``("token", Token)`` per generated token, then ``("done", (finish_reason, n_generated))``,
or ``("error", message)``. A request with logprobs that ends at one of its end tokens gets
``("end", Token)`` before "done": that token with its logprob and an empty text (OpenAI's
completions list it among the logprobs; lm-evaluation-harness scores an echoed prompt as
every entry but the last, assuming one generated token there). It counts in n_generated.
"""

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.autograd import no_grad
from minillm.errors import MinillmError
from minillm.sample import _TextTracker, sample_next
from minillm.serve.kvcache import GROW, RaggedKVCache
from minillm.tensor import Tensor

# One model call at a time across every engine of the process (a server with adapters runs one
# engine per model id): Numba's workqueue threading layer must not be entered from two threads
# at once, and autograd's no_grad switch is one flag for the whole process.
FORWARD_LOCK = threading.Lock()
PREFILL_TOKENS = 2048  # prompt positions one prefill pass may hold (padded: prompts x longest)
# An idle engine's wait for more requests after the first (seconds), and the most it waits in
# all as a multiple of it. 20 ms: clients started together reach the engine within a few tens
# of milliseconds of each other (benchmarks/bench_serve.py: 8 over 35 ms), and a lone request
# pays at most this much more before its first token.
BATCH_WAIT = 0.02
BATCH_WAIT_TIMES = 4


class QueueFull(MinillmError):
    """The engine's waiting queue is full (the server answers 503 with Retry-After)."""


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    seed: Optional[int] = None  # None: fresh entropy
    stop: list = field(default_factory=list)  # stop strings, not part of the text
    stop_ids: frozenset = frozenset()  # end tokens (eos, end of turn), not part of the text
    logprobs: Optional[int] = None  # None: none; k >= 0: each token's logprob and top k
    prompt_logprobs: Optional[int] = None  # likewise for the prompt's tokens (echo)


@dataclass
class Token:
    id: int
    text: str  # the text that became certain with this token ('' while held back)
    logprob: Optional[float] = None
    top: Optional[list] = None  # [(id, logprob)] most probable first


@dataclass
class PromptLogprobs:
    ids: list  # the prompt's token ids
    logprobs: list  # per prompt token; None for the first (nothing predicts it)
    top: list  # per prompt token: [(id, logprob)] or None for the first


class Request:
    """One sequence to generate. ``cancel()`` may be called from any thread."""

    def __init__(self, prompt_ids, params, sink):
        self.prompt_ids = [int(i) for i in prompt_ids]
        self.params, self.sink = params, sink
        self.cancelled = False
        self.rng = np.random.default_rng(params.seed)
        self.tracker = None
        self.generated = 0
        self.next_token = None  # the sampled token that the next decode step feeds

    def cancel(self):
        self.cancelled = True


def log_softmax(logits):
    z = logits - logits.max()
    return z - math.log(np.exp(z).sum())


def _top(lp, k):
    if not k:
        return []
    idx = np.argpartition(-lp, min(k, lp.size - 1))[:k]
    idx = idx[np.argsort(-lp[idx], kind="stable")]
    return [(int(i), float(lp[i])) for i in idx]


class Engine:
    """Continuous-batching generation for one model and tokenizer.

    ``max_batch``: rows decoded together; ``queue_size``: requests that may wait for a row;
    ``batch_wait``: seconds an idle engine waits, after a request arrives, for others to join
    its prefill (each one that comes restarts the wait, up to BATCH_WAIT_TIMES of it in all):
    clients that start together then share one prefill instead of the first one running
    alone while the rest queue behind it (a dynamic batcher's queue delay).
    """

    def __init__(self, model, tokenizer, max_batch=8, queue_size=64, batch_wait=BATCH_WAIT):
        if max_batch < 1 or queue_size < 1:
            raise MinillmError(f"max_batch and queue_size must be at least 1, got {max_batch} "
                               f"and {queue_size}.")
        if not 0 <= batch_wait <= 10:
            raise MinillmError(f"batch_wait is seconds between 0 and 10, got {batch_wait}.")
        self.batch_wait = float(batch_wait)
        self.model, self.tokenizer = model, tokenizer
        self.max_batch = int(max_batch)
        self.block_size = model.config.block_size
        self.vocab = tokenizer.vocab_size  # ids past it (a padded model vocabulary) are never drawn
        self.inbox = queue.Queue(maxsize=int(queue_size))
        self.active = []  # requests in rows 0..len-1 of the cache, in row order
        self.cache = None
        self._thread, self._stop = None, threading.Event()
        like = next(iter(model.parameters())).data  # where the weights live
        self._on_gpu = backend.is_cupy(like)
        # prompts packed end to end, without padding (a Llama on the CPU), or right-padded
        self._packs = not self._on_gpu and hasattr(model, "prefill_packed")

    # ------------------------------------------------------------------ outside the thread
    def start(self):
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="minillm-engine",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self):
        if self._thread is not None:
            self._stop.set()
            try:
                self.inbox.put_nowait(None)  # wake the loop
            except queue.Full:
                pass
            self._thread.join()
            self._thread = None

    def submit(self, prompt_ids, params, sink: Callable):
        """Queue one request; raises QueueFull when ``queue_size`` requests already wait."""
        if not prompt_ids:
            raise MinillmError("a request needs at least one prompt token.")
        if len(prompt_ids) + params.max_tokens > self.block_size:
            raise MinillmError(f"{len(prompt_ids)} prompt tokens + {params.max_tokens} new ones "
                               f"do not fit the context of {self.block_size}.")
        req = Request(prompt_ids, params, sink)
        try:
            self.inbox.put_nowait(req)
        except queue.Full:
            raise QueueFull(f"{self.inbox.maxsize} requests are already waiting.") from None
        return req

    # ------------------------------------------------------------------ the thread
    def _loop(self):
        self.model.eval()
        while not self._stop.is_set():
            try:
                self._admit(block=not self.active)
                if self.active:
                    self._decode_step()
            except Exception as e:  # a failed step fails its requests, never the server
                for req in self.active:
                    req.sink("error", f"generation failed: {e}")
                self.active, self.cache = [], None
        for req in self.active:
            req.sink("error", "the server is shutting down.")

    def _admit(self, block):
        """Take waiting requests while rows are free and prefill them, several prompts in one
        forward pass where they fit PREFILL_TOKENS positions (padding counted)."""
        taken = []
        idle, deadline = block, None
        while len(self.active) + len(taken) < self.max_batch:
            try:
                if block:
                    req = self.inbox.get(timeout=0.5)
                elif idle and self.batch_wait > 0:  # gather those arriving with the first
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + BATCH_WAIT_TIMES * self.batch_wait
                    req = self.inbox.get(timeout=max(0.0, min(self.batch_wait, deadline - now)))
                else:
                    req = self.inbox.get_nowait()
            except queue.Empty:
                break
            block = False
            if req is None or self._stop.is_set():
                break
            if not req.cancelled:
                taken.append(req)
        group = []
        for req in taken:
            alone = req.params.prompt_logprobs is not None  # needs every position's logits
            lens = [len(r.prompt_ids) for r in group + [req]]
            positions = sum(lens) if self._packs else max(lens) * len(lens)
            if group and (alone or positions > PREFILL_TOKENS):
                self._prefill(group)
                group = []
            group.append(req)
            if alone:
                self._prefill(group)
                group = []
        if group:
            self._prefill(group)

    def _to_dev(self, a):
        return backend.to_device(a, "cuda") if self._on_gpu else a

    def _head(self, h):
        """Logits of final hidden states h (..., C): Llama's ``head``, GPT's tied matrix."""
        head = getattr(self.model, "head", None)
        return head(h) if head is not None else F.linear(h, self.model.lm_head_weight)

    def _prefill(self, group):
        """Run the prompts of ``group`` as one right-padded batch (k, Pmax) through a fresh
        KVCache: causal attention keeps each real token from seeing the padding after it and
        every row starts at position 0, so no mask is needed. Each row's first token comes
        from its last real position; its cache rows 0..P-1 move into the ragged cache."""
        try:
            self._prefill_rows(group)
        except Exception as e:
            for req in group:
                req.sink("error", f"generation failed: {e}")

    def _prefill_rows(self, group):
        # each distinct prompt once: n choices of one request, or clients sending one text,
        # share its row (and each still samples with its own generator)
        distinct, row = {}, []
        for r in group:
            row.append(distinct.setdefault(tuple(r.prompt_ids), len(distinct)))
        prompts = list(distinct)
        k = len(prompts)
        lens = [len(p) for p in prompts]
        P = max(lens)
        first = group[0].params
        cache = self.model.new_kv_cache(k, max_len=P)
        packed = self._packs and first.prompt_logprobs is None
        if not packed:
            ids = np.zeros((k, P), dtype=np.int64)  # (k, P) right-padded with id 0
            for b, p in enumerate(prompts):
                ids[b, : lens[b]] = p
        with FORWARD_LOCK, no_grad():
            if packed:
                logits = self._head(self.model.prefill_packed(prompts, cache))  # (k, 1, V)
                last = backend.to_numpy(logits.data)[:, 0, : self.vocab]  # (k, V)
            elif first.prompt_logprobs is not None:  # a group of one: every position's logits
                logits, _ = self.model(self._to_dev(ids), kv_cache=cache)  # (1, P, V)
                rows = backend.to_numpy(logits.data)[0, :, : self.vocab]  # (P, V)
                self._prompt_logprobs(group[0], rows)
                last = rows[-1:]  # (1, V)
            else:
                h = self.model(self._to_dev(ids), kv_cache=cache, return_hidden=True)  # (k, P, C)
                xp = backend.array_module(h.data)
                h_last = h.data[xp.arange(k), xp.asarray(lens) - 1][:, None, :]  # (k, 1, C)
                logits = self._head(Tensor(h_last))  # (k, 1, V)
                last = backend.to_numpy(logits.data)[:, 0, : self.vocab]  # (k, V)
        for req, b in zip(group, row):
            req.tracker = _TextTracker(self.tokenizer, list(req.params.stop))
            if req.params.max_tokens == 0:
                req.sink("done", ("length", 0))
                continue
            if self._emit(req, last[b]):
                continue
            if self.cache is None:
                self.cache = RaggedKVCache.for_model(self.model, self.max_batch)
            self.cache.load_row(len(self.active), cache, lens[b], src=b)
            self.active.append(req)

    def _prompt_logprobs(self, req, rows):
        """Each prompt token's log-probability given the ones before it (none for the first),
        row by row in float64 (a (P, V) float64 copy of a long prompt would be large)."""
        ids, k = req.prompt_ids, req.params.prompt_logprobs
        lps, tops = [None], [None]
        for j in range(1, len(ids)):
            lp = log_softmax(rows[j - 1].astype(np.float64))
            lps.append(float(lp[ids[j]]))
            tops.append(_top(lp, k))
        req.sink("prompt", PromptLogprobs(list(ids), lps, tops))

    def _emit(self, req, logits):
        """Sample the request's next token from logits (V,) as the model gave them; send it;
        return True when the request has finished (or was cancelled)."""
        events, finished = self._advance(req, logits)
        for kind, payload in events:
            req.sink(kind, payload)
        return finished

    def _advance(self, req, logits, pick=None):
        """The request's next token from logits (V,) (``pick``: its argmax, where the caller
        took every row's at once): (the events to send it, whether the request has finished,
        or was cancelled)."""
        if req.cancelled:
            return (), True
        p = req.params
        greedy = p.temperature == 0 or p.top_k == 1
        if greedy and pick is not None and p.logprobs is None:
            t = pick
        else:
            if not greedy or p.logprobs is not None:
                # probabilities in float64; a greedy pick is the same argmax in float32 (SmolLM2,
                # 8 greedy rows: converting (8, 49152) logits took 81 us a step)
                logits = logits.astype(np.float64)
            t = int(sample_next(logits, req.rng, p.temperature, p.top_k, p.top_p))
        req.generated += 1
        lp = top = None
        if p.logprobs is not None:
            ls = log_softmax(logits)
            lp, top = float(ls[t]), _top(ls, p.logprobs)
        if t in p.stop_ids:
            done = ("done", ("stop", req.generated))
            if lp is not None:  # the end token is listed with its logprob, never in the text
                return (("end", Token(t, "", lp, top)), done), True  # (lm-eval drops it)
            return (done,), True
        piece = req.tracker.push(t)
        if req.tracker.done:
            return (("token", Token(t, piece, lp, top)), ("done", ("stop", req.generated))), True
        if req.generated >= p.max_tokens:
            piece += req.tracker.finish()
            return (("token", Token(t, piece, lp, top)),
                    ("done", ("length", req.generated))), True
        req.next_token = t
        return (("token", Token(t, piece, lp, top)),), False

    def _decode_step(self):
        B = len(self.active)
        mask, pos = self.cache.step_inputs(B)  # (B, Tk), (B, 1)
        ids = np.asarray([[r.next_token] for r in self.active], dtype=np.int64)  # (B, 1)
        with FORWARD_LOCK, no_grad():
            logits, _ = self.model(self._to_dev(ids), kv_cache=self.cache,
                                   attention_mask=mask, position_ids=self._to_dev(pos),
                                   last_only=True)
        logits = backend.to_numpy(logits.data)[:, -1, : self.vocab]  # (B, V)
        picks = logits.argmax(axis=1).tolist()  # every row's greedy pick in one call
        # every row's token first, then every event: the events of a step reach the event
        # loop within microseconds, one wake-up for all (sending each row's as it was picked
        # woke the loop about 5 times in a step of 8 rows, and each wake took the core)
        steps = [self._advance(req, logits[b], picks[b]) for b, req in enumerate(self.active)]
        for req, (events, _) in zip(self.active, steps):
            for kind, payload in events:
                req.sink(kind, payload)
        finished = [b for b, (_, done) in enumerate(steps) if done]
        for b in reversed(finished):  # highest rows first, so each move keeps rows packed
            last = len(self.active) - 1
            self.cache.move_row(last, b)
            self.active[b] = self.active[last]
            self.active.pop()
        if not self.active and self.cache.capacity > GROW:
            # an idle server gives back what a long request grew; rows of the first size stay
            # for the next requests (allocating them again, 94 MB for SmolLM2's 8 rows, took
            # 8 to 74 ms of the next first token)
            self.cache = None
