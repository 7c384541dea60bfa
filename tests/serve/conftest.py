"""A real minillm server in this process: uvicorn on 127.0.0.1, port 0, in a background thread,
serving tiny random models (a char tokenizer, so token counts are character counts)."""

import socket
import threading
import time

import pytest

from minillm import backend
from minillm.models import GPT, GPTConfig
from minillm.serve.app import ServedModel, create_app
from minillm.serve.engine import Engine
from minillm.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'\n"
API_KEY = "test-key"
MAX_BODY = 64 * 1024


class Template:
    """A chat template in plain characters: 'role: content' lines, the assistant's turn open
    at the end (the char tokenizer has no special tokens; a reply ends at eos)."""

    def render(self, messages, add_generation_prompt=False):
        out = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return out + ("assistant:" if add_generation_prompt else "")


class Slow:
    """A model that takes 20 ms a call: a generation long enough to be interrupted."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *a, **kw):
        self.calls += 1
        time.sleep(0.02)
        return self.model(*a, **kw)


class Stalled(Engine):
    """An engine whose loop never runs: its queue only fills (for the 503 test)."""

    def start(self):
        return self

    def close(self):
        pass


class Server:
    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="package")
def server_class():
    """``Server(app)``: a context manager running ``app`` on 127.0.0.1 (for other models)."""
    pytest.importorskip("uvicorn")
    return Server


@pytest.fixture(scope="package")
def tiny():
    backend.manual_seed(11)
    tok = CharTokenizer.from_text(TEXT)
    # initializer_range 0.3 (GPT-2 uses 0.02): logits spread over several units, so the
    # greedy top-2 gaps are far above float32 rounding (test_concurrent checks the gap)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2,
                          n_embd=32, initializer_range=0.3)).eval()
    return model, tok


@pytest.fixture(scope="package")
def server(tiny):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    model, tok = tiny
    engine = Engine(model, tok, max_batch=8, queue_size=32)
    slow = Slow(model)
    stalled = Stalled(model, tok, max_batch=1, queue_size=1)
    stalled.submit([0], stalled_params(), lambda *a: None)  # the one place in its queue, taken
    models = [ServedModel("tiny", engine, tok), ServedModel("tiny-chat", engine, tok, Template()),
              ServedModel("slow", Engine(slow, tok, max_batch=2), tok, Template()),
              ServedModel("stalled", stalled, tok)]
    app = create_app(models, api_key=API_KEY, max_body=MAX_BODY)
    with Server(app) as s:
        s.engine, s.slow, s.model, s.tok = engine, slow, model, tok
        s.api_key, s.max_body, s.template = API_KEY, MAX_BODY, Template()
        yield s


def stalled_params():
    from minillm.serve.engine import SamplingParams

    return SamplingParams(max_tokens=1)


@pytest.fixture
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0,
                         timeout=120)
