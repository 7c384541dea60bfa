"""OpenAI's request and response shapes: checking the parameters of a request, and building
the JSON of answers, stream chunks and errors.

Only what minillm implements is accepted: a parameter that would change the answer and is not
implemented (a non-zero frequency penalty, logit_bias, tools) is a 400 naming it, never
silently ignored; parameters that change nothing here (user, metadata) are accepted.
"""

import secrets
import time

from minillm.serve.engine import SamplingParams

MAX_N = 16  # choices per request
MAX_TOP_LOGPROBS = 20
MAX_STOPS = 16


class APIError(Exception):
    """An error answer: HTTP status and OpenAI's {"error": {message, type, param, code}}."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
             404: "invalid_request_error", 413: "invalid_request_error",
             503: "server_error", 500: "server_error"}

    def __init__(self, status, message, param=None, code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self):
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "error"),
                          "param": self.param, "code": self.code}}


def bad(message, param=None, code=None):
    return APIError(400, message, param=param, code=code)


def new_id(prefix):
    return f"{prefix}-{secrets.token_hex(12)}"


def now():
    return int(time.time())


# ---------------------------------------------------------------------------- parameters
def _number(body, name, default, lo, hi, integer=False):
    v = body.get(name)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise bad(f"'{name}' must be {kind} from {lo} to {hi}, got {v!r}.", param=name)
    return v


def boolean(body, name, default=False):
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"'{name}' must be true or false, got {v!r}.", param=name)
    return v


def _refuse_unsupported(body):
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise bad(f"'{name}' is not supported by this server (leave it at 0).", param=name)
    if body.get("logit_bias"):
        raise bad("'logit_bias' is not supported by this server.", param="logit_bias")
    for name in ("tools", "functions", "tool_choice", "function_call"):
        if body.get(name):
            raise bad(f"'{name}' is not supported by this server.", param=name)
    fmt = body.get("response_format")
    if fmt and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad("only the 'text' response_format is supported.", param="response_format")
    if body.get("suffix"):
        raise bad("'suffix' is not supported by this server.", param="suffix")
    if body.get("best_of") not in (None, 1):
        raise bad("'best_of' is not supported by this server (leave it at 1).", param="best_of")


def end_ids(body, ids):
    """The token ids that end a reply: ``ids``, or none with ``ignore_eos`` (an extension of
    vLLM's and llama.cpp's servers: a benchmark's requests then all run to max_tokens)."""
    return frozenset() if boolean(body, "ignore_eos") else frozenset(ids)


def stop_strings(body):
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or \
            len(stops) > MAX_STOPS:
        raise bad(f"'stop' must be a string or a list of at most {MAX_STOPS} strings.",
                  param="stop")
    return [s for s in stops if s]


def common_params(body, default_max, prompt_len, context, max_name="max_tokens"):
    """The sampling parameters shared by both endpoints -> (SamplingParams, n, stream,
    include_usage). ``default_max`` is None for 'as many as fit'."""
    _refuse_unsupported(body)
    n = _number(body, "n", 1, 1, MAX_N, integer=True)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:  # as OpenAI: the single most probable token
        temperature = 0.0
    seed = _number(body, "seed", None, -(2**63), 2**63 - 1, integer=True)
    if seed is not None and seed < 0:
        seed = seed % 2**63
    stream = boolean(body, "stream")
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or not stream):
        raise bad("'stream_options' must be an object, and only with stream true.",
                  param="stream_options")
    include_usage = boolean(opts or {}, "include_usage")
    room = context - prompt_len
    max_tokens = _number(body, max_name, None, 0, 2**31, integer=True)
    if max_tokens is None and max_name != "max_tokens":
        max_tokens = _number(body, "max_tokens", None, 0, 2**31, integer=True)
    if room < 0 or (room == 0 and max_tokens != 0):
        raise bad(f"This model's maximum context length is {context} tokens; the prompt has "
                  f"{prompt_len}.", param="messages" if max_name != "max_tokens" else "prompt",
                  code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = room if default_max is None else min(default_max, room)
    elif max_tokens > room:
        raise bad(f"This model's maximum context length is {context} tokens. However, you "
                  f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, "
                  f"{max_tokens} for the completion).", param=max_name,
                  code="context_length_exceeded")
    params = SamplingParams(max_tokens=max_tokens, temperature=float(temperature),
                            top_p=float(top_p) if top_p < 1 else None, seed=seed,
                            stop=stop_strings(body))
    return params, n, stream, include_usage


def chat_logprobs(body):
    """None, or the number of top alternatives (0..20) per token."""
    want = boolean(body, "logprobs")
    top = _number(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS, integer=True)
    if top is not None and not want:
        raise bad("'top_logprobs' needs 'logprobs' set to true.", param="top_logprobs")
    return (top or 0) if want else None


def completion_logprobs(body):
    return _number(body, "logprobs", None, 0, MAX_TOP_LOGPROBS, integer=True)


def messages_of(body):
    """The conversation, each content as one string (a list of text parts is joined)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("'messages' must be a non-empty list of messages.", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad(f"message {i} must be an object with a 'role'.", param=f"messages.[{i}]")
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text" and
                        isinstance(part.get("text"), str)):
                    raise bad(f"message {i}: only text content parts are supported.",
                              param=f"messages.[{i}].content")
                parts.append(part["text"])
            content = "".join(parts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise bad(f"message {i}: 'content' must be a string or a list of text parts.",
                      param=f"messages.[{i}].content")
        out.append({"role": m["role"], "content": content})
    return out


def prompts_of(body):
    """The prompts: a list of (text or None, token ids or None), one per prompt."""
    p = body.get("prompt")
    err = bad("'prompt' must be a string, a list of strings, a list of token ids or a list of "
              "lists of token ids.", param="prompt")

    def ids(x):
        return isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                           for i in x)

    if isinstance(p, str):
        return [(p, None)]
    if not isinstance(p, list) or not p:
        raise err
    if all(isinstance(x, str) for x in p):
        return [(x, None) for x in p]
    if ids(p):
        return [(None, p)]
    if all(ids(x) and x for x in p):
        return [(None, x) for x in p]
    raise err


# ---------------------------------------------------------------------------- answers
def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_token_logprob(tokenizer, tid, lp, top):
    def entry(i, v):
        s = tokenizer.decode([i])
        return {"token": s, "logprob": v, "bytes": list(s.encode("utf-8"))}

    d = entry(tid, lp)
    d["top_logprobs"] = [entry(i, v) for i, v in top]
    return d


class CompletionLogprobs:
    """The logprobs object of each completion choice (tokens, token_logprobs, top_logprobs,
    text_offset: offsets into prompt + completion), built as events arrive."""

    def __init__(self, tokenizer, texts, echo, want):
        self.tok, self.texts, self.echo, self.want = tokenizer, texts, echo, want
        self.lp = [{"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                   for _ in texts]
        self.offset = [0 if echo else len(t) for t in texts]

    def _push(self, i, tid, lp, top):
        d, s = self.lp[i], self.tok.decode([tid])
        d["tokens"].append(s)
        d["token_logprobs"].append(lp)
        d["top_logprobs"].append(None if top is None else
                                 {self.tok.decode([t]): v for t, v in top})
        d["text_offset"].append(self.offset[i])
        self.offset[i] += len(s)
        n = len(d["tokens"]) - 1
        return {k: v[n:] for k, v in d.items()}

    def add(self, i, kind, x):
        """(text to add, the logprobs of this event or None) for a prompt or token event."""
        if kind == "prompt":
            return "", self._prompt(i, x)
        lp = self._push(i, x.id, x.logprob, x.top) if self.want is not None else None
        return x.text, lp

    def _prompt(self, i, x):
        start = len(self.lp[i]["tokens"])
        for tid, lp, top in zip(x.ids, x.logprobs, x.top):
            self._push(i, tid, lp, top)
        return {k: v[start:] for k, v in self.lp[i].items()}

    def logprobs_of(self, i):
        return self.lp[i] if self.want is not None else None
