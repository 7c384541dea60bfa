"""The OpenAI-compatible HTTP API (Starlette): /v1/models, /v1/chat/completions,
/v1/completions, /health, and the chat page at /.

A handler checks the request (protocol.py), turns it into token ids, submits one engine request
per choice (``n``) and either collects the events into one JSON answer or forwards them as
server-sent events (``data: {chunk}`` lines, then ``data: [DONE]``). The engine runs on its own
thread; its events cross into the event loop through ``call_soon_threadsafe``. A client that
goes away cancels its requests: the handler notices the disconnect while it waits for events.

Uvicorn runs the app on uvloop and parses HTTP with httptools where they are installed (the
``serve`` extra installs both; without them, asyncio's loop and h11). On the two cores that also
run the model, the loop thread's CPU per streamed token is taken from the decoding: with
SmolLM2 and 8 streaming clients it fell from 0.15 ms (asyncio, h11) to 0.10 ms.
"""

import asyncio
import collections
import contextlib
import gc
import hmac
import json
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Optional

from minillm.errors import MinillmError, TokenizerError
from minillm.serve import protocol as P
from minillm.serve.engine import Engine, QueueFull

MAX_BODY = 4 * 1024 * 1024  # bytes of a request body
RETRY_AFTER = "1"  # seconds, on 503
CHECK = 0.25  # seconds between checks that the client is still connected


@dataclass
class ServedModel:
    """A model id the server answers to: its engine, tokenizer and chat template (an object
    with ``render(messages, add_generation_prompt)``, or None for a base model). A chat reply
    ends at one of ``stop_ids`` (default: the tokenizer's eos); a completion at eos.
    ``served_model`` builds one from a loaded model."""

    name: str
    engine: Engine
    tokenizer: object
    chat_template: Optional[object] = None
    stop_ids: Optional[frozenset] = None
    created: int = 0

    def __post_init__(self):
        self.created = self.created or P.now()
        self.context = self.engine.block_size
        self.stop_ids = frozenset(self.stop_ids or [int(self.tokenizer.eos_id)])

    def info(self):
        return {"id": self.name, "object": "model", "created": self.created,
                "owned_by": "minillm"}


def served_model(name, model, tokenizer, max_batch=8, queue_size=64, batch_wait=None):
    """The ServedModel of a model and tokenizer as ``minillm.load`` returns them: its own
    engine, and the chat template the tokenizer carries (``minillm.chat.chat_template_of``)."""
    from minillm.chat import chat_template_of

    if tokenizer is None:
        raise MinillmError(f"the model {name} was saved without a tokenizer; the server needs "
                           f"one to read prompts (save it with minillm.save(model, dir, "
                           f"tokenizer=...)).")
    found = chat_template_of(tokenizer)
    template, stop_ids = found if found is not None else (None, None)
    options = {} if batch_wait is None else {"batch_wait": batch_wait}
    engine = Engine(model, tokenizer, max_batch=max_batch, queue_size=queue_size, **options)
    return ServedModel(name, engine, tokenizer, template, stop_ids)


class ClientGone(Exception):
    """The client closed the connection: its requests were cancelled, nobody reads on."""


class _Crossing:
    """Engine events on their way into one event loop. A decode step sends one event per
    request, from the engine thread, within microseconds of each other; the first of a burst
    wakes the loop (``call_soon_threadsafe``, a write to its wake-up socket) and the loop takes
    all that have come by the time it runs, instead of waking once per event."""

    def __init__(self, loop):
        self.loop, self.lock, self.pending = loop, threading.Lock(), []

    def put(self, run, event):  # on the engine thread
        with self.lock:
            wake = not self.pending
            self.pending.append((run, event))
        if wake:
            try:
                self.loop.call_soon_threadsafe(self.deliver)
            except RuntimeError:  # the event loop has closed: nobody is listening
                with self.lock:
                    lost, self.pending = self.pending, []
                for r, _ in lost:
                    r.cancel()

    def deliver(self):  # on the loop
        with self.lock:
            batch, self.pending = self.pending, []
        for run, event in batch:
            run.arrive(event)


class _Run:
    """The engine requests of one HTTP request and the events that came for them."""

    def __init__(self, crossing):
        self.loop = crossing.loop
        self.crossing = crossing
        self.events = collections.deque()
        self.waiter = None  # a future the next event (or the check timer) resolves
        self.requests = []
        self.checked = self.loop.time()

    def sink(self, index):
        def put(kind, payload):  # called on the engine thread
            self.crossing.put(self, (index, kind, payload))
        return put

    def arrive(self, event):
        self.events.append(event)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def cancel(self):
        for r in self.requests:
            r.cancel()

    async def next(self, request):
        """The next (index, kind, payload); cancels everything if the client went away
        (checked at least every CHECK seconds, also while events keep coming)."""
        while True:
            now = self.loop.time()
            if now - self.checked >= CHECK:
                self.checked = now
                if await request.is_disconnected():
                    self.cancel()
                    raise ClientGone
            if self.events:
                return self.events.popleft()
            # a plain future and a timer: asyncio.wait_for would wrap a task around each wait
            self.waiter = self.loop.create_future()
            timer = self.loop.call_later(CHECK, _resolve, self.waiter)
            try:
                await self.waiter
            finally:
                timer.cancel()
                self.waiter = None


def _resolve(future):
    if not future.done():
        future.set_result(None)


class API:
    def __init__(self, models, api_key=None, max_body=MAX_BODY):
        self.models = {m.name: m for m in models}
        self.api_key, self.max_body = api_key, max_body
        self._crossing = None

    def crossing(self):
        """The _Crossing into the running event loop (one per loop the app runs in)."""
        loop = asyncio.get_running_loop()
        if self._crossing is None or self._crossing.loop is not loop:
            self._crossing = _Crossing(loop)
        return self._crossing

    # ------------------------------------------------------------------ common steps
    def check_key(self, request):
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise P.APIError(401, "Incorrect or missing API key: send it as "
                                  "'Authorization: Bearer KEY'.", code="invalid_api_key")

    async def read_body(self, request):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise P.APIError(413, f"The request body is larger than {self.max_body} bytes.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise P.APIError(413, f"The request body is larger than {self.max_body} bytes.")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise P.bad("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise P.bad("The request body must be a JSON object.")
        return body

    def model_of(self, body):
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise P.bad("'model' must name a model; GET /v1/models lists them.", param="model")
        served = self.models.get(name)
        if served is None:
            raise P.APIError(404, f"The model '{name}' does not exist; this server has: "
                                  f"{', '.join(self.models)}.", param="model",
                             code="model_not_found")
        return served

    def submit(self, served, run, jobs):
        """Submit (index, ids, params) jobs; all or none (a full queue cancels the rest)."""
        room = served.engine.inbox.maxsize
        if len(jobs) > room:
            raise P.bad(f"this request asks for {len(jobs)} completions (prompts x n); the "
                        f"server queues at most {room} at a time (minillm serve --queue).")
        try:
            for index, ids, params in jobs:
                run.requests.append(served.engine.submit(ids, params, run.sink(index)))
        except QueueFull:
            run.cancel()
            raise P.APIError(503, "The server is busy (its queue is full); retry shortly.",
                             headers={"Retry-After": RETRY_AFTER}) from None
        except MinillmError as e:
            run.cancel()
            raise P.bad(str(e), code="context_length_exceeded") from None

    @staticmethod
    def encode(tokenizer, text, param):
        try:
            return tokenizer.encode(text)
        except TokenizerError as e:
            raise P.bad(f"cannot tokenize the {param}: {e}", param=param) from None

    # ------------------------------------------------------------------ endpoints
    async def list_models(self, request):
        self.check_key(request)
        return {"object": "list", "data": [m.info() for m in self.models.values()]}

    async def get_model(self, request):
        self.check_key(request)
        name = request.path_params["model"]
        if name not in self.models:
            raise P.APIError(404, f"The model '{name}' does not exist.", param="model",
                             code="model_not_found")
        return self.models[name].info()

    async def chat(self, request):
        self.check_key(request)
        body = await self.read_body(request)
        served = self.model_of(body)
        if served.chat_template is None:
            raise P.bad(f"The model '{served.name}' has no chat template; use /v1/completions "
                        f"with a plain prompt.", param="model", code="no_chat_template")
        messages = P.messages_of(body)
        try:
            text = served.chat_template.render(messages, add_generation_prompt=True)
        except MinillmError as e:
            raise P.bad(f"the chat template cannot render these messages: {e}",
                        param="messages") from None
        ids = self.encode(served.tokenizer, text, "messages")
        params, n, stream, include_usage = P.common_params(
            body, None, len(ids), served.context, max_name="max_completion_tokens")
        params.stop_ids = P.end_ids(body, served.stop_ids)
        params.logprobs = P.chat_logprobs(body)
        run = _Run(self.crossing())
        self.submit(served, run, [(j, ids, _seeded(params, j)) for j in range(n)])
        ctx = dict(id=P.new_id("chatcmpl"), created=P.now(), model=served.name)
        if stream:
            return _sse(self.chat_chunks(request, run, served, ctx, n, len(ids), include_usage),
                        run)
        return await self.chat_answer(request, run, served, ctx, n, len(ids))

    async def chat_answer(self, request, run, served, ctx, n, prompt_tokens):
        texts, lps, reasons, counts = [""] * n, [[] for _ in range(n)], [None] * n, [0] * n
        want = run.requests[0].params.logprobs is not None
        async for i, kind, x in _events(request, run, n):
            if kind == "token":
                texts[i] += x.text
                if want:
                    lps[i].append(P.chat_token_logprob(served.tokenizer, x.id, x.logprob, x.top))
            elif kind == "done":
                reasons[i], counts[i] = x
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                    "logprobs": {"content": lps[i]} if want else None,
                    "finish_reason": reasons[i]} for i in range(n)]
        return {**ctx, "object": "chat.completion", "choices": choices,
                "usage": P.usage(prompt_tokens, sum(counts)), "system_fingerprint": None}

    async def chat_chunks(self, request, run, served, ctx, n, prompt_tokens, include_usage):
        want = run.requests[0].params.logprobs is not None
        extra = {"usage": None} if include_usage else {}

        def chunk(i, delta, logprobs=None, reason=None):
            return {**ctx, "object": "chat.completion.chunk", "system_fingerprint": None,
                    "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                 "finish_reason": reason}], **extra}

        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""})
        total = 0
        async for i, kind, x in _events(request, run, n):
            if kind == "token":
                lp = {"content": [P.chat_token_logprob(served.tokenizer, x.id, x.logprob,
                                                       x.top)]} if want else None
                if x.text or lp:
                    yield chunk(i, {"content": x.text}, lp)
            elif kind == "done":
                total += x[1]
                yield chunk(i, {}, reason=x[0])
        if include_usage:
            yield {**ctx, "object": "chat.completion.chunk", "system_fingerprint": None,
                   "choices": [], "usage": P.usage(prompt_tokens, total)}

    async def completions(self, request):
        self.check_key(request)
        body = await self.read_body(request)
        served = self.model_of(body)
        tok = served.tokenizer
        prompts = []
        for text, ids in P.prompts_of(body):
            if ids is None:
                ids = self.encode(tok, text, "prompt") or [tok.bos_id]
            elif any(not 0 <= i < tok.vocab_size for i in ids):
                raise P.bad(f"token ids must lie in 0..{tok.vocab_size - 1}.", param="prompt")
            else:
                text = tok.decode(ids)
            prompts.append((text, ids))
        echo = P.boolean(body, "echo")
        logprobs = P.completion_logprobs(body)
        jobs, settings = [], None
        for p, (text, ids) in enumerate(prompts):
            params, n, stream, include_usage = P.common_params(body, 16, len(ids),
                                                               served.context)
            params.stop_ids = P.end_ids(body, [tok.eos_id])
            params.logprobs = logprobs
            params.prompt_logprobs = logprobs if echo else None
            settings = (n, stream, include_usage)
            jobs += [(p * n + j, ids, _seeded(params, j)) for j in range(n)]
        n, stream, include_usage = settings
        run = _Run(self.crossing())
        self.submit(served, run, jobs)
        ctx = dict(id=P.new_id("cmpl"), created=P.now(), model=served.name)
        prompt_tokens = sum(len(ids) for _, ids in prompts)
        texts = [text for text, _ in prompts for _ in range(n)]
        pieces = P.CompletionLogprobs(tok, texts, echo, logprobs)
        if stream:
            return _sse(self.completion_chunks(request, run, ctx, pieces, prompt_tokens,
                                               include_usage), run)
        reasons, counts = [None] * len(jobs), [0] * len(jobs)
        out = [""] * len(jobs)
        async for i, kind, x in _events(request, run, len(jobs)):
            if kind == "done":
                reasons[i], counts[i] = x
            else:
                out[i] += pieces.add(i, kind, x)[0]
        choices = [{"text": (texts[i] if echo else "") + out[i], "index": i,
                    "logprobs": pieces.logprobs_of(i), "finish_reason": reasons[i]}
                   for i in range(len(jobs))]
        return {**ctx, "object": "text_completion", "choices": choices,
                "usage": P.usage(prompt_tokens, sum(counts)), "system_fingerprint": None}

    async def completion_chunks(self, request, run, ctx, pieces, prompt_tokens, include_usage):
        extra = {"usage": None} if include_usage else {}

        def chunk(i, text, logprobs=None, reason=None):
            return {**ctx, "object": "text_completion", "system_fingerprint": None,
                    "choices": [{"text": text, "index": i, "logprobs": logprobs,
                                 "finish_reason": reason}], **extra}

        total, echoed = 0, set()
        if pieces.echo and pieces.want is None:
            for i, text in enumerate(pieces.texts):
                echoed.add(i)
                yield chunk(i, text)
        async for i, kind, x in _events(request, run, len(pieces.texts)):
            if kind == "done":
                total += x[1]
                yield chunk(i, "", reason=x[0])
                continue
            text, lp = pieces.add(i, kind, x)
            if kind == "prompt" and i not in echoed:
                text = pieces.texts[i]
            if text or lp:
                yield chunk(i, text, lp)
        if include_usage:
            yield {**ctx, "object": "text_completion", "system_fingerprint": None,
                   "choices": [], "usage": P.usage(prompt_tokens, total)}


def _seeded(params, j):
    """Choice j of n draws with seed + j (every choice differs, each is reproducible)."""
    from dataclasses import replace

    return replace(params, seed=None if params.seed is None else params.seed + j)


async def _events(request, run, n):
    """The events of a run until each of its n requests is done; an engine error is a 500."""
    done = 0
    while done < n:
        i, kind, x = await run.next(request)
        if kind == "error":
            run.cancel()
            raise P.APIError(500, x)
        if kind == "done":
            done += 1
        yield i, kind, x


def _sse(chunks, run):
    from starlette.responses import StreamingResponse

    async def body():
        try:
            async for c in chunks:
                yield f"data: {json.dumps(c)}\n\n"
        except P.APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        except ClientGone:
            return
        finally:
            run.cancel()  # a finished run ignores it; an abandoned one stops generating
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def chat_page():
    return resources.files("minillm.serve").joinpath("static/chat.html").read_text("utf-8")


def create_app(models, api_key=None, max_body=MAX_BODY):
    """The Starlette application serving ``models`` (ServedModel list). Their engines start
    with the application and stop with it."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    api = API(models, api_key=api_key, max_body=max_body)

    def endpoint(fn):
        async def handle(request):
            try:
                out = await fn(request)
            except P.APIError as e:
                return JSONResponse(e.body(), status_code=e.status, headers=e.headers)
            except ClientGone:
                return Response(status_code=499)  # nginx's "client closed request"; unread
            return out if not isinstance(out, dict) else JSONResponse(out)
        return handle

    async def index(request):
        return HTMLResponse(chat_page())

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def http_error(request, exc):
        err = P.APIError(exc.status_code, exc.detail or "error")
        return JSONResponse(err.body(), status_code=exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engines = {id(m.engine): m.engine for m in models}.values()
        for e in engines:
            e.start()
        # What the process holds by now (libraries, model, tokenizer) lives as long as the
        # server: the garbage collector's full passes skip it from here on. Each pass over it
        # stopped every stream for its duration, the event loop and the engine's Python alike:
        # 12 ms for minillm serve's 38,000 objects, 58 ms with the openai package loaded too
        # (a round of bench_serve.py where one fell on the prefill: every first token ~100 ms
        # late).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            for e in engines:
                e.close()

    routes = [
        Route("/", index), Route("/health", health),
        Route("/v1/models", endpoint(api.list_models)),
        Route("/v1/models/{model:path}", endpoint(api.get_model)),
        Route("/v1/chat/completions", endpoint(api.chat), methods=["POST"]),
        Route("/v1/completions", endpoint(api.completions), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.api = api
    return app
