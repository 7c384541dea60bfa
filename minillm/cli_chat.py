"""``minillm chat``: the terminal front end of ``minillm.chat`` (reading lines, slash commands,
printing replies).

At a terminal, lines are read with Python's ``readline`` (arrow keys, Ctrl-A/E, history kept in
the cache folder, ``~/.cache/minillm/chat_history``), replies are labelled ``assistant>`` and
Ctrl-C stops the reply being written (it stays in the conversation as far as it got) while the
session goes on; Ctrl-C or Ctrl-D at the prompt ends the session. From a pipe, each line is a
message and only the replies (one line each) and the commands' answers are printed: no prompt, no
label, so the output can be read by a script. Labels follow standard output: they are printed
when it is a terminal.
"""

import sys
from pathlib import Path

from minillm.errors import MinillmError

HELP = """commands:
  /system TEXT   set the system prompt (/system alone clears it)
  /seed N        the next reply uses seed N, the one after N + 1 (/seed alone: unseeded)
  /save FILE     write the conversation as JSON messages ({"messages": [...]}, OpenAI's format)
  /reset         start a new conversation (the system prompt stays)
  /temp T, /top_k K (0 = off), /top_p P, /max N (reply length in tokens)
  /help, /quit (or Ctrl-D); Ctrl-C stops a reply"""
HISTORY_LENGTH = 1000


def add_chat(sub):
    """The chat command's parser (cli.py adds the sampling flags it shares with ``sample``)."""
    p = sub.add_parser(
        "chat", help="talk with a model (the built-in SmolLM2-135M-Instruct by default)",
        description="Chat with a model in the format it was trained on: a minillm SFT run "
                    "through its PROMPT:/RESPONSE: template, a model with a chat template "
                    "(instruction-tuned GGUF models such as the built-in one) through that, "
                    "other models through a plain transcript (User: ... / Assistant: ...). The "
                    "conversation stays in the KV cache between turns and replies stream as "
                    "they come. At a terminal: line editing and history, Ctrl-C stops a reply. "
                    "Standard input may be a pipe: one message per line; then only the replies "
                    "are printed, one line each. Type /help for commands; /quit or Ctrl-D ends.")
    p.add_argument("--system", default=None, help="system prompt")
    return p


def command(chat, line):
    """Run the slash command ``line`` on ``chat``; return (text to show, keep chatting?)."""
    name, _, arg = line.strip().partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return "", False
    if name == "/reset":
        chat.reset()
        return "(new conversation)", True
    if name == "/help":
        return HELP, True
    if name == "/system":
        chat.system = arg or None
        return f"(system prompt: {arg})" if arg else "(no system prompt)", True
    if name == "/seed":
        try:
            chat.set_seed(int(arg) if arg else None)
        except ValueError:
            return f"/seed needs a whole number, got {arg!r}.", True
        return f"(seed = {arg})" if arg else "(unseeded)", True
    if name == "/save":
        if not arg:
            return "/save needs a file name.", True
        try:
            chat.save(Path(arg).expanduser())
        except OSError as e:
            return f"cannot write {arg}: {e.strerror or e}", True
        return f"(saved {len(chat.conversation())} messages to {arg})", True
    return _set_option(chat, name, arg), True


def _set_option(chat, name, arg):
    keys = {"/temp": ("temperature", float), "/top_k": ("top_k", int),
            "/top_p": ("top_p", float), "/max": ("max_new_tokens", int)}
    if name not in keys:
        return f"unknown command {name}; type /help for the list."
    key, cast = keys[name]
    try:
        value = cast(arg)
    except ValueError:
        return f"{name} needs a number, got {arg!r}."
    if key == "top_k" and value == 0:
        value = None  # 0 turns top-k off, as on the command line
    new = dict(chat.options, **{key: value})
    try:
        chat.check(new)
    except MinillmError as e:
        return str(e)
    chat.options = new
    return f"({key} = {value})"


def history_path():
    from minillm.fetch import default_cache_dir

    return default_cache_dir() / "chat_history"


def _start_readline():
    """Line editing and the history file, when the readline module exists; returns a function
    that saves the history (or None)."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: plain input() still works
        return None
    path = history_path()
    try:
        readline.read_history_file(path)
    except OSError:  # no history yet, or an unreadable file: start a new one
        pass
    readline.set_history_length(HISTORY_LENGTH)

    def save():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:  # a read-only home: the session worked, only its history is not kept
            pass

    return save


def _lines(interactive):
    """The user's lines: input() with a prompt at a terminal, else standard input as it comes.
    Ends at EOF, and at Ctrl-C while waiting for a line."""
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            line = None
        if line is None or (not interactive and line == ""):  # "" from a pipe: its end
            if interactive:
                print()
            return
        yield line.rstrip("\r\n")


def _reply(chat, line, label):
    """Print the reply to ``line``; Ctrl-C stops it and the session goes on."""
    pieces = chat.send(line)
    try:
        try:
            first = next(pieces, "")  # the prompt is encoded here: its errors come first
        except MinillmError as e:  # e.g. a character the tokenizer does not know: keep chatting
            print(f"minillm chat: {e}", file=sys.stderr)
            return
        print(f"{chat.ROLE}> " if label else "", first, sep="", end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        pieces.close()  # the reply so far joins the conversation
        print(" [stopped]" if label else "", flush=True)
        return
    print(flush=True)


def run_chat(args, options):
    """The chat session; ``options`` are the sampling options of the command line."""
    from minillm.chat import open_chat
    from minillm.cli_models import load_for_sampling, model_source

    options = dict(options)
    options.pop("use_cache", None)  # a chat always keeps its cache
    model, tokenizer = load_for_sampling(args)
    chat = open_chat(model, tokenizer, model_source(args), system=args.system,
                     seed=args.seed, **options)
    interactive = sys.stdin.isatty()
    label = sys.stdout.isatty()
    save_history = _start_readline() if interactive else None
    if interactive:
        print(f"chatting with {model_source(args)} through {chat.FORMAT}; /help for commands, "
              f"Ctrl-C stops a reply, Ctrl-D ends")
    try:
        for line in _lines(interactive):
            if not line.strip():
                continue
            if line.startswith("/"):
                text, going = command(chat, line)
                if text:
                    print(text)
                if not going:
                    return
                continue
            _reply(chat, line, label)
    finally:
        if save_history is not None:
            save_history()
