"""`minillm chat` (minillm/cli_chat.py): piped input and output that a script can read, labelled
replies at a terminal, slash commands, Ctrl-C stopping a reply but not the session, Ctrl-C and
Ctrl-D at the prompt ending it with status 0, and, through a real pseudo-terminal, readline's line
editing and the history file."""

import io
import json
import os
import select
import signal
import sys
import time

import numpy as np
import pytest

import minillm
from minillm.chat import TranscriptChat
from minillm.checkpoints.run import save
from minillm.cli import main
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ :\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    minillm.manual_seed(5)
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2,
                          n_embd=16, initializer_range=0.3)).eval()
    d = tmp_path_factory.mktemp("chat") / "run"
    save(d, model, tokenizer=tok)
    return d


def chat_cli(monkeypatch, capsys, run_dir, script, *flags, tty_out=False):
    """Run `minillm chat` on ``script`` as piped standard input; (exit status, out, err)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    if tty_out:
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    code = main(["chat", "--ckpt", str(run_dir), "--greedy", "--max-new-tokens", "8", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_piped_chat_prints_only_replies_one_line_each(monkeypatch, capsys, run_dir):
    code, out, err = chat_cli(monkeypatch, capsys, run_dir, "hello\nhow are you\n")
    model, tok = minillm.load(run_dir)
    chat = TranscriptChat(model, tok, greedy=True, max_new_tokens=8)
    want = ["".join(chat.send("hello")), "".join(chat.send("how are you"))]
    assert code == 0 and err == ""
    assert out.splitlines() == want  # no prompt, no label: a script reads one reply a line


def test_replies_are_labelled_when_standard_output_is_a_terminal(monkeypatch, capsys, run_dir):
    code, out, _ = chat_cli(monkeypatch, capsys, run_dir, "hello\n", tty_out=True)
    model, tok = minillm.load(run_dir)
    reply = "".join(TranscriptChat(model, tok, greedy=True, max_new_tokens=8).send("hello"))
    assert code == 0 and out == f"assistant> {reply}\n"


def test_slash_commands_from_a_pipe(monkeypatch, capsys, run_dir, tmp_path):
    saved = tmp_path / "talk.jsonl"
    script = ("/help\nhello\n/temp 0.5\n/top_k 5\n/top_p 0.9\n/max 7\n/temp -1\n/seed 3\n"
              "/seed x\n/system be brief\n/save " + str(saved) + "\n/reset\n~\n/nope\n"
              "/save " + str(tmp_path / "no" / "such" / "dir" / "f.json") + "\n"
              "/quit\nnot read\n")
    code, out, err = chat_cli(monkeypatch, capsys, run_dir, script)
    assert code == 0
    for line in ["/system TEXT", "/seed N", "/save FILE", "/reset", "(temperature = 0.5)",
                 "(top_k = 5)", "(top_p = 0.9)", "(max_new_tokens = 7)",
                 "temperature must be >= 0", "(seed = 3)", "/seed needs a whole number",
                 "(system prompt: be brief)", f"(saved 3 messages to {saved})",
                 "(new conversation)", "unknown command /nope", "cannot write"]:
        assert line in out, line
    assert "cannot encode the message" in err  # "~" is not in the vocabulary; chat goes on
    messages = json.loads(saved.read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == "be brief" and messages[1]["content"] == "hello"


def test_a_system_prompt_on_a_model_without_a_template_is_a_transcript_line(
        monkeypatch, capsys, run_dir):
    code, out, err = chat_cli(monkeypatch, capsys, run_dir, "hi\n", "--system", "Be brief")
    model, tok = minillm.load(run_dir)
    chat = TranscriptChat(model, tok, system="Be brief", greedy=True, max_new_tokens=8)
    assert code == 0 and err == "" and out == "".join(chat.send("hi")) + "\n"


class SigintAt:
    """The model, with a real SIGINT sent to this process in its n-th call (Ctrl-C mid-reply)."""

    def __init__(self, model, n):
        self.model, self.n, self.calls = model, n, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, idx, **kw):
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), signal.SIGINT)
        return self.model(idx, **kw)


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, whatever this process
    inherited (a job a non-interactive shell started in the background ignores SIGINT)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_stops_the_reply_and_the_session_goes_on(monkeypatch, capsys, run_dir,
                                                         sigint_raises):
    from minillm import cli_models

    model, tok = minillm.load(run_dir)
    slow = SigintAt(model, 4)
    monkeypatch.setattr(cli_models, "load_for_sampling", lambda args: (slow, tok))
    code, out, err = chat_cli(monkeypatch, capsys, run_dir, "hello\nagain\n",
                              tty_out=True)
    assert code == 0 and "interrupted" not in err
    lines = out.splitlines()
    assert lines[0].startswith("assistant> ") and lines[0].endswith(" [stopped]")
    partial = lines[0][len("assistant> "):-len(" [stopped]")]
    chat = TranscriptChat(model, tok, greedy=True, max_new_tokens=8)
    assert partial and "".join(chat.send("hello")).startswith(partial)
    chat.messages[-1]["content"] = partial  # the stopped reply stays, as far as shown
    assert lines[1] == "assistant> " + "".join(chat.send("again"))


@pytest.mark.parametrize("end", [EOFError, KeyboardInterrupt])
def test_ctrl_d_or_ctrl_c_at_the_prompt_ends_with_status_0(monkeypatch, capsys, run_dir,
                                                         tmp_path, end):
    import builtins

    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    typed = iter(["/help"])

    def fake_input(prompt):
        assert prompt == "you> "
        try:
            return next(typed)
        except StopIteration:
            raise end from None

    monkeypatch.setattr(builtins, "input", fake_input)
    assert main(["chat", "--ckpt", str(run_dir)]) == 0
    assert "/system TEXT" in capsys.readouterr().out


# --------------------------------------------------------------------------- a real terminal
@pytest.fixture(scope="module")
def endless_run(tmp_path_factory):
    """A model that always says "a" (ln_f maps every position to one vector pointing at wte["a"]),
    never eos or a newline, with a 4096-token window: its replies go on until stopped."""
    tok = CharTokenizer.from_text(TEXT)
    minillm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=4096, n_layer=1, n_head=1,
                          n_embd=16)).eval()
    a = tok.encode("a")[0]
    params = dict(model.named_parameters())
    params["wte.weight"].data[a] *= 4.0
    params["ln_f.weight"].data[:] = 0.0
    params["ln_f.bias"].data[:] = params["wte.weight"].data[a] * 10.0
    d = tmp_path_factory.mktemp("endless") / "run"
    save(d, model, tokenizer=tok)
    return d


class Terminal:
    """A child process on a pseudo-terminal: type into it, wait for what it prints."""

    def __init__(self, argv, env):
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its standard streams are the terminal
            try:
                # Ctrl-C as on a user's terminal, even where this test runs with SIGINT ignored
                # (a job a non-interactive shell started in the background inherits SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.seen, self.code = "", None

    def expect(self, text, timeout=180):
        """Read until ``text`` has appeared after what earlier expects consumed."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} within {timeout} s; the terminal shows {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    break
        assert text in self.seen, f"no {text!r}; the terminal shows {self.seen!r}"
        i = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:i], self.seen[i:]
        return before

    def type(self, keys):
        os.write(self.fd, keys.encode())

    def wait(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
            try:  # keep draining the terminal so that the child never blocks on it
                if select.select([self.fd], [], [], 0.2)[0]:
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the chat did not end; the terminal shows {self.seen!r}")

    def interrupt_prompt(self, tries=4):
        """Ctrl-C at the prompt; the exit status. CPython's readline looks at signals only when
        its wait for a key is interrupted, so a Ctrl-C that comes while it is still drawing the
        prompt waits for the next key: as a user would, press it again if nothing happens."""
        for _ in range(tries):
            time.sleep(0.5)
            self.type("\x03")
            try:
                return self.wait(timeout=15)
            except AssertionError:
                continue
        return self.wait(timeout=1)

    def close(self):
        if self.code is None:  # still running (a failed expect): end it
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_at_a_terminal_lines_are_edited_kept_in_history_and_ctrl_c_stops_a_reply(
        endless_run, tmp_path):
    pytest.importorskip("readline")
    env = dict(os.environ, MINILLM_CACHE=str(tmp_path / "cache"), TERM="xterm",
               OPENBLAS_NUM_THREADS="1")
    saved = tmp_path / "talk.json"
    term = Terminal([sys.executable, "-m", "minillm", "chat", "--ckpt", str(endless_run),
                     "--greedy", "--max-new-tokens", "4000"], env)
    try:
        term.expect("through a User: / Assistant: transcript")
        term.expect("you> ")
        term.type("/hlp\x1b[D\x1b[De\r")  # two left arrows, then "e": "/help"
        term.expect("/system TEXT")
        term.type("hi\r")
        term.expect("assistant> " + "a" * 20)  # the reply is being written ...
        term.type("\x03")  # ... Ctrl-C
        term.expect("[stopped]")
        term.expect("you> ")  # the session goes on
        term.type(f"/save {saved}\r")
        term.expect("(saved 2 messages")
        term.expect("you> ")
        assert term.interrupt_prompt() == 0  # Ctrl-C at the prompt ends the session
    finally:
        term.close()
    reply = json.loads(saved.read_text(encoding="utf-8"))["messages"][1]["content"]
    assert reply == "a" * len(reply) and 20 <= len(reply) < 4000  # stopped, kept as shown
    history = (tmp_path / "cache" / "chat_history").read_text(encoding="utf-8").splitlines()
    assert history[-3:] == ["/help", "hi", f"/save {saved}"]


def test_the_endless_model_is_endless(endless_run):
    """The fixture the terminal test relies on: greedy replies are "a" after "a"."""
    model, tok = minillm.load(endless_run)
    text = minillm.generate(model, tok, "hi", max_new_tokens=50, greedy=True)
    assert text == "a" * 50
    logits, _ = model(np.asarray([tok.encode("hi there")]), last_only=True)
    assert int(np.argmax(np.asarray(logits.data)[0, -1])) == tok.encode("a")[0]
