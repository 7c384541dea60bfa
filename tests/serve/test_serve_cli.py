"""``minillm serve``'s checks before it loads anything: the bind address, the extra it needs."""

import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from minillm.cli import main
from minillm.serve.cli import _bind, is_loopback


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                        ("[::1]", True), ("127.0.0.9", True),
                                        ("0.0.0.0", False), ("192.168.1.4", False),
                                        ("::", False), ("example.org", False)])
def test_loopback_addresses(host, loop):
    assert is_loopback(host) is loop


def test_a_public_address_needs_a_key_or_insecure(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--api-key" in err and "--insecure" in err and len(err.splitlines()) == 1


def test_without_the_serve_extra_one_sentence_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "minillm[serve]" in err and "Traceback" not in err


def test_port_0_binds_a_free_port():
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_serve_is_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--ckpt", "--host", "--port", "--api-key", "--insecure",
                 "--max-batch", "--queue", "--batch-wait", "--activations"):
        assert flag in out


@pytest.mark.parametrize("flags,message", [(["--batch-wait", "-1"], "--batch-wait is seconds"),
                                           (["--max-batch", "0"], "at least 1")])
def test_bad_serve_numbers_are_one_sentence_before_loading(flags, message, capsys):
    assert main(["serve", "--ckpt", "no/such/dir"] + flags) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_q8_0_activations_of_a_float_model_are_one_sentence(monkeypatch, capsys):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import minillm.serve.cli as cli
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("abc ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1,
                          n_embd=8))
    monkeypatch.setattr(cli, "load_model", lambda name, **options: (model, tok))
    assert main(["serve", "--ckpt", "runs/tiny", "--activations", "q8_0", "--port", "0"]) != 0
    err = capsys.readouterr().err
    assert "--activations q8_0 acts on quantized weights" in err and "Traceback" not in err


SERVE_SCRIPT = """
import sys
from minillm import backend
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer
import minillm.serve.cli as cli

def load_model(name, **options):  # stands in for minillm.load: a tiny random GPT, no template
    backend.manual_seed(0 if name == "runs/tiny" else 1)  # an adapter: other weights
    tok = CharTokenizer.from_text("abcdefgh ")
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=1,
                         n_embd=8)), tok

cli.load_model = load_model
from minillm.cli import main
sys.exit(main(["serve", "--ckpt", "runs/tiny", "--adapter", "runs/lora_a", "--port", "0",
               "--api-key", "k"]))
"""


@contextmanager
def serving(args):
    """Run ``python *args``, a ``minillm serve`` of the model "tiny" on a free port that prints
    its URL first; wait until it answers /health, yield the URL, stop it with Ctrl-C."""
    import httpx

    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("minillm serve: tiny at http://127.0.0.1:"), (line, proc.stderr)
        url = line.split(" at ")[1].split()[0].rstrip("/")
        for _ in range(100):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_prints_its_url_and_answers(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    with serving(["-c", SERVE_SCRIPT]) as url:
        auth = {"Authorization": "Bearer k"}
        models = httpx.get(url + "/v1/models", headers=auth).json()["data"]
        assert [m["id"] for m in models] == ["tiny", "lora_a"]
        texts = []
        for model in ("tiny", "lora_a"):
            r = httpx.post(url + "/v1/completions", headers=auth,
                           json={"model": model, "prompt": "abc", "max_tokens": 8,
                                 "temperature": 0}, timeout=60)
            assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3
            texts.append(r.json()["choices"][0]["text"])
        assert texts[0] != texts[1]  # each id answers with its own weights


def test_serve_a_gguf_file_and_chat(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("gguf")
    from gguf_fixtures import write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path / "tiny.gguf")
    with serving(["-m", "minillm", "serve", "--ckpt", str(path), "--port", "0",
                  "--max-batch", "2"]) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=60,
                       json={"model": "tiny", "max_tokens": 5, "temperature": 0,
                             "messages": [{"role": "user", "content": "Hello, world!"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["role"] == "assistant"
