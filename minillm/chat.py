"""Chat with an instruction-tuned model through its own chat template, keeping the conversation
in the KV cache between turns.

Each turn the whole conversation (system prompt, earlier turns, the new user message) is rendered
with the model's Jinja template (``add_generation_prompt=True``) and tokenized, exactly as Hugging
Face's ``apply_chat_template`` does. The cache already holds the keys and values of the tokens
of the previous turns, so only the tokens after the longest common prefix of (what the cache
holds, what the new rendering gives) are run: usually just the tail of the last reply's end
marker and the new message. Because the prefix is recomputed from the rendered text each turn,
the cache can never disagree with what a fresh run would compute; at worst (a reply whose
re-tokenization differs from the generated ids) a few more tokens are recomputed.

The reply ends at one of ``stop_ids`` (the template's end-of-turn and eos tokens), at a stop
string, or after ``max_new_tokens``. The conversation must fit the model's context window
(``block_size``): when a new turn would not, the oldest turns (after the system prompt) are
dropped, and the cache is recomputed from there.
"""

import numpy as np

from minillm.autograd import no_grad
from minillm.errors import MinillmError, TokenizerError
from minillm.sample import (
    _TextTracker,
    apply_repetition_penalty,
    chat_command,
    check_options,
    sample_next,
)
from minillm.tokenizers.chat_template import ChatTemplate

GROW = 256  # cache positions added at a time (a full 8192-position cache would cost 377 MB)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def chat_template_of(tokenizer):
    """(ChatTemplate, stop ids) for a tokenizer that carries a chat template
    (``tokenizer.chat_template``, the Jinja source a loader put there), or None. The template
    gets the tokenizer's bos and eos strings; a reply stops at eos and at the end-of-turn
    tokens of END_OF_TURN that the vocabulary has."""
    source = getattr(tokenizer, "chat_template", None)
    if not source:
        return None
    vocab = getattr(tokenizer, "vocab", {})
    text = {i: s for s, i in vocab.items()}
    template = ChatTemplate(source, bos_token=text.get(tokenizer.bos_id),
                            eos_token=text.get(tokenizer.eos_id))
    stop_ids = {tokenizer.eos_id} | {vocab[s] for s in END_OF_TURN if s in vocab}
    return template, frozenset(int(i) for i in stop_ids)


def common_prefix(a, b):
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TemplateChat:
    """A conversation through ``render(messages, add_generation_prompt=True) -> str``.

    ``tokenizer.encode`` must parse the special tokens the template writes (``<|im_start|>``).
    ``options``: max_new_tokens, temperature, top_k, top_p, greedy, repetition_penalty, seed
    (turn i uses seed + i), stop (strings).
    """

    def __init__(self, model, tokenizer, render, stop_ids, system=None, **options):
        self.model, self.tokenizer, self.render = model, tokenizer, render
        self.stop_ids = {int(i) for i in stop_ids}
        stop = options.pop("stop", None)
        self.stops = [stop] if isinstance(stop, str) else list(stop or [])
        self.options = dict(max_new_tokens=512, temperature=0.7, top_k=None, top_p=None,
                            repetition_penalty=1.0, greedy=False)
        self.options.update(options)
        self.seed = self.options.pop("seed", None)
        self.check()
        self.system = system
        self.cache, self.cached = None, []  # cached: the ids whose k, v the cache holds
        self.reset()

    @classmethod
    def for_model(cls, model, tokenizer, system=None, **options):
        """A TemplateChat through ``tokenizer.chat_template``, or None when it has none. The
        reply stops at eos and at the template's end-of-turn tokens."""
        found = chat_template_of(tokenizer)
        if found is None:
            return None
        template, stop_ids = found
        return cls(model, tokenizer, template.render, stop_ids, system=system, **options)

    def command(self, line):
        """Run a /command (see minillm.sample.CHAT_HELP); return (text, keep chatting?)."""
        return chat_command(self, line)

    def check(self, options=None):
        o = options or self.options
        check_options(o["max_new_tokens"], o["temperature"], o["top_k"], o["top_p"],
                      o["repetition_penalty"])

    def reset(self):
        """Forget the conversation (the system prompt stays)."""
        self.messages, self.turn = [], 0
        self.cached = []
        if self.cache is not None:
            self.cache.reset()

    def _conversation(self, extra):
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages + extra

    def _prompt_ids(self, user):
        """Token ids of the rendered conversation plus the new user turn, trimmed to fit."""
        block = self.model.config.block_size
        need = self.options["max_new_tokens"]
        while True:
            text = self.render(self._conversation([user]), add_generation_prompt=True)
            try:
                ids = self.tokenizer.encode(text)
            except TokenizerError as e:
                raise MinillmError(f"cannot encode the message: {e}") from None
            if len(ids) + need <= block or not self.messages:
                break
            self.messages = self.messages[2:]  # drop the oldest exchange
        if len(ids) >= block:
            raise MinillmError(f"the message is {len(ids)} tokens with the template; the model's "
                               f"context holds {block}.")
        return ids

    def _reserve(self, n):
        """A cache with room for n positions, grown in steps (its filled part kept)."""
        block = self.model.config.block_size
        if self.cache is None or self.cache.max_len < n:
            size = min(block, max(n, (self.cache.max_len if self.cache else 0) + GROW))
            new = self.model.new_kv_cache(1, max_len=size)
            if self.cache is not None:
                keep = min(self.cache.length, len(self.cached))
                for a, b in zip(new.k + new.v, self.cache.k + self.cache.v):
                    a[:, :, :keep] = b[:, :, :keep]
                new.length = keep
            self.cache = new

    def _run(self, ids):
        """Logits (V,) after feeding ``ids`` on top of the cache."""
        logits, _ = self.model(np.asarray([ids], dtype=np.int64), kv_cache=self.cache,
                               last_only=True)
        self.cached.extend(ids)
        return np.asarray(logits.data, dtype=np.float64)[0, -1]

    def send(self, message):
        """Yield the reply to ``message`` piece by piece; the turn joins the conversation once the
        reply has ended (an interrupted reply leaves the conversation as it was)."""
        if not isinstance(message, str):
            raise MinillmError(f"a message must be a string, got {type(message).__name__}.")
        user = {"role": "user", "content": message}
        ids = self._prompt_ids(user)
        o = self.options
        max_new = min(o["max_new_tokens"], self.model.config.block_size - len(ids))
        self._reserve(len(ids) + max_new)
        keep = min(common_prefix(self.cached, ids), len(ids) - 1)  # run at least one token
        self.cached = self.cached[:keep]
        self.cache.length = keep
        rng = np.random.default_rng(None if self.seed is None else self.seed + self.turn)
        V = self.tokenizer.vocab_size
        seen = np.zeros(self.model.config.vocab_size, dtype=bool)
        seen[ids] = True
        tracker = _TextTracker(self.tokenizer, self.stops)
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                logits = self._run(ids[keep:])
                for _ in range(max_new):
                    logits[V:] = -np.inf
                    row = apply_repetition_penalty(logits[None], seen[None],
                                                   o["repetition_penalty"])
                    t = int(sample_next(row, rng, o["temperature"], o["top_k"], o["top_p"],
                                        o["greedy"])[0])
                    if t in self.stop_ids:
                        break
                    seen[t] = True
                    piece = tracker.push(t)
                    if piece:
                        yield piece
                    if tracker.done:
                        break
                    logits = self._run([t])
            if not tracker.done:
                piece = tracker.finish()
                if piece:
                    yield piece
        finally:
            self.model.train(was_training)
        self.messages += [user, {"role": "assistant", "content": tracker.emitted}]
        self.turn += 1
