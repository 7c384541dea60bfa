"""A conversation with a model, kept in the KV cache between turns, in the prompt format the
model was trained on:

    TemplateChat    the model's own chat template (instruction-tuned GGUF / HF models, and chat
                    fine-tunes of them): the Jinja source the tokenizer carries
    SFTChat         a minillm SFT run (``minillm finetune --task sft``): each exchange as the run
                    wrote its examples, ``PROMPT:\\n{prompt}\\nRESPONSE:\\n{response}<eos>``
    TranscriptChat  a plain pretrained model: a ``User: ... / Assistant: ...`` transcript

``open_chat(model, tokenizer, source)`` picks one for what ``minillm.load(source)`` returned.

Each turn the whole conversation (system prompt, earlier turns, the new user message) is turned
into token ids (for a template: rendered with ``add_generation_prompt=True`` and tokenized,
exactly as Hugging Face's ``apply_chat_template`` does). The cache already holds the keys and
values of the tokens of the previous turns, so only the tokens after the longest common prefix
of (what the cache holds, what the new ids are) are run: usually just the tail of the last
reply's end marker and the new message. Because the prefix is recomputed from the conversation
each turn, the cache can never disagree with what a fresh run would compute; at worst (a reply
whose re-tokenization differs from the generated ids, a changed system prompt) more tokens are
recomputed.

The reply ends at one of ``stop_ids`` (end-of-turn and eos tokens), at a stop string, or after
``max_new_tokens``. A reply stopped early (Ctrl-C in ``minillm chat``, or a caller that stops
reading ``send``'s pieces) stays in the conversation as far as it was shown. The conversation must
fit the model's context window (``block_size``): when a new turn would not, the oldest turns
(after the system prompt) are dropped, and the cache is recomputed from there.
"""

import json
from pathlib import Path

import numpy as np

from minillm.autograd import no_grad
from minillm.errors import MinillmError, TokenizerError
from minillm.sample import _TextTracker, apply_repetition_penalty, check_options, sample_next
from minillm.tokenizers.chat_template import ChatTemplate
from minillm.train.tasks import SFT_TEMPLATE

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


def checkpoint_task(source):
    """The fine-tuning task a minillm checkpoint or run folder was trained for ("sft",
    "classify"), or None (a pretrained run, a GGUF file, a HF directory, a built-in name)."""
    from minillm.checkpoints import adapter, peft, run

    path = Path(source)
    if not path.is_dir():
        return None
    ckpt = run.resolve_checkpoint(path)
    if ckpt is None or peft.is_peft_dir(ckpt):
        return None
    if adapter.is_adapter_dir(ckpt):
        return adapter.read_adapter_config(ckpt).get("task", "sft")
    cfg = run.load_config(ckpt)
    return cfg.get("task") if isinstance(cfg, dict) else None


def open_chat(model, tokenizer, source=None, system=None, **options):
    """The chat in the format ``model`` was trained on: its SFT template for a minillm SFT run,
    else its chat template if the tokenizer has one, else a plain transcript."""
    if source is not None and checkpoint_task(source) == "sft":
        return SFTChat(model, tokenizer, system=system, **options)
    chat = TemplateChat.for_model(model, tokenizer, system=system, **options)
    return chat if chat is not None else TranscriptChat(model, tokenizer, system=system, **options)


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
    (turn i uses seed + i), stop (strings). ``messages`` holds the conversation in OpenAI's
    format (without the system prompt, which is ``system``).
    """

    ROLE = "assistant"  # the speaker label of the replies
    FORMAT = "its chat template"  # how the conversation reaches the model, in words
    TRIM_LEFT = False  # whether a prompt too long for the context may lose its beginning

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

    def check(self, options=None):
        o = options or self.options
        check_options(o["max_new_tokens"], o["temperature"], o["top_k"], o["top_p"],
                      o["repetition_penalty"])

    def reset(self):
        """Forget the conversation (the system prompt stays); turn numbers start again at 0."""
        self.messages, self.turn, self.seed_turn = [], 0, 0
        self.cached = []
        if self.cache is not None:
            self.cache.reset()

    def set_seed(self, seed):
        """The next reply uses ``seed``, the one after seed + 1, ...; None: unseeded."""
        self.seed, self.seed_turn = seed, self.turn

    def conversation(self, extra=()):
        """The messages with the system prompt first (OpenAI's format), then ``extra``."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages + list(extra)

    def save(self, path):
        """Write the conversation as one JSON line ``{"messages": [...]}``: OpenAI's message
        format, and a line of the chat JSONL that ``minillm finetune --task chat`` reads."""
        from minillm.checkpoints.atomic import write_file

        line = json.dumps({"messages": self.conversation()}, ensure_ascii=False) + "\n"
        write_file(Path(path), line.encode("utf-8"))

    def encode(self, messages):
        """Token ids of ``messages`` ready for the reply (the generation prompt added)."""
        return self.tokenizer.encode(self.render(messages, add_generation_prompt=True))

    def _prompt_ids(self, user):
        """Token ids of the conversation plus the new user turn, trimmed to fit."""
        block = self.model.config.block_size
        need = self.options["max_new_tokens"]
        while True:
            try:
                ids = self.encode(self.conversation([user]))
            except TokenizerError as e:
                raise MinillmError(f"cannot encode the message: {e}") from None
            if len(ids) + need <= block or not self.messages:
                break
            self.messages = self.messages[2:]  # drop the oldest exchange
        if len(ids) + min(need, block // 2) > block and self.TRIM_LEFT:
            ids = ids[len(ids) + min(need, block // 2) - block:]  # keep the transcript's end
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
        """Logits (V,) after feeding ``ids`` on top of the cache. ``cached`` grows only once the
        model has run, so an interrupt inside the model leaves it naming what the cache holds."""
        logits, _ = self.model(np.asarray([ids], dtype=np.int64), kv_cache=self.cache,
                               last_only=True)
        self.cached.extend(ids)
        return np.asarray(logits.data, dtype=np.float64)[0, -1]

    def _clean(self, text):
        """The reply as it joins the conversation."""
        return text

    def send(self, message):
        """Yield the reply to ``message`` piece by piece. The turn joins the conversation when
        the reply ends, also when it ends early (KeyboardInterrupt inside, or the caller closing
        the generator): then the reply is the text yielded so far."""
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
        seed = None if self.seed is None else self.seed + self.turn - self.seed_turn
        rng = np.random.default_rng(seed)
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
            self.messages += [user, {"role": "assistant", "content": self._clean(tracker.emitted)}]
            self.turn += 1


class SFTChat(TemplateChat):
    """A minillm SFT run's conversation: every exchange as one training example,
    ``PROMPT:\\n{prompt}\\nRESPONSE:\\n{response}<eos>`` (``minillm.train.tasks.SFT_TEMPLATE``),
    one after another; the new message ends at ``RESPONSE:\\n`` and the reply at eos. A system
    prompt, which SFT data has no place for, goes first as a line of plain text."""

    FORMAT = "its SFT template (PROMPT: ... RESPONSE: ...)"

    def __init__(self, model, tokenizer, system=None, **options):
        super().__init__(model, tokenizer, None, [tokenizer.eos_id], system=system, **options)

    def encode(self, messages):
        enc, ids = self.tokenizer.encode, []
        for m in messages:
            if m["role"] == "system":
                ids += enc(m["content"] + "\n")
            elif m["role"] == "user":
                ids += enc(SFT_TEMPLATE.format(prompt=m["content"]))
            else:
                ids += enc(m["content"]) + [self.tokenizer.eos_id]
        return ids


class TranscriptChat(TemplateChat):
    """A plain pretrained model's conversation, a transcript it continues:

        System: <system prompt>      (when there is one)
        User: <message>
        Assistant: <reply>
        User: ...

    The reply is the continuation after "Assistant:", without surrounding whitespace; it ends at
    "\\nUser:" (the model starting the user's next line), at eos or after ``max_new_tokens``. A
    single turn too long for the context loses the transcript's beginning."""

    TRIM_LEFT = True
    FORMAT = "a User: / Assistant: transcript"

    def __init__(self, model, tokenizer, system=None, **options):
        stop = options.pop("stop", None)
        stops = ["\nUser:"] + ([stop] if isinstance(stop, str) else list(stop or []))
        super().__init__(model, tokenizer, self.render_transcript, [tokenizer.eos_id],
                         system=system, stop=stops, **options)

    @staticmethod
    def render_transcript(messages, add_generation_prompt=False):
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        text = "".join(f"{names[m['role']]}: {m['content']}\n" for m in messages)
        return text + ("Assistant:" if add_generation_prompt else "")

    @property
    def transcript(self):
        return self.render_transcript(self.conversation())

    def send(self, message):
        """The reply without its leading and trailing whitespace (held back until more text
        follows), so the text shown is the text that joins the transcript."""
        pieces, started, held = super().send(message), False, ""
        try:
            for piece in pieces:
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                text = held + piece
                body = text.rstrip()
                held = text[len(body):]
                if body:
                    yield body
        finally:
            pieces.close()  # closed early: the turn joins the conversation now, not at gc

    def _clean(self, text):
        return text.strip()
