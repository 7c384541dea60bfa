"""Every command of README.md, run as written with small settings in a temporary folder, so the
README cannot drift from the code.

The fenced ```bash blocks are split into commands (a trailing backslash continues a line) and
each runs in bash, in README order, in one temporary folder with the test's virtual environment
first on PATH; each ```python block runs in a fresh interpreter there. What keeps them small and
offline:

- SETUP stands in for `make demo`: the same `minillm pretrain --config shakespeare_char_tiny`,
  on the bundled Shakespeare sample plus a few speeches of the speakers the README names, with
  the small settings below;
- SMALL rewrites iteration counts and epochs, gives every `minillm pretrain` a one-block model,
  and points the demo data at that corpus instead of the tiny Shakespeare download;
- SKIP lists the commands that are not run, each with its reason;
- NumPy kernels (MINILLM_KERNELS=reference, and --kernels=reference for pretrain, whose config
  says auto): no Numba compile (the kernels have their own tests).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (pattern searched in a command or a python block, why it is not run); each must match something
SKIP = [
    (r"^make (demo|test)", "the Makefile's jobs: `make demo` is SETUP here with small settings (the "
                           "real one downloads tiny Shakespeare and trains for minutes), "
                           "`make test` is this suite"),
    (r"^source \.venv/bin/activate", "the test already runs in the virtual environment"),
    (r"smollm2|^minillm chat( +#|$)|\| minillm chat|runs/skylark",
     "the built-in SmolLM2: a 98 MB download (tests/checkpoints cover it on tiny GGUF files)"),
    (r"any-llama\.gguf", "a placeholder for the reader's own GGUF file"),
    (r"^pip install|^minillm serve|openai|^mpiexec", "installs packages, starts a server that "
     "runs until stopped, or MPI ranks (tests/serve and tests/train/test_distributed cover them)"),
    (r"huggingface-cli", "a download from the Hugging Face hub"),
    (r"pytest|benchmarks/", "the test suite and the benchmarks themselves"),
]

TINY_MODEL = ("--n_layer=1 --n_head=2 --n_embd=32 --block_size=32 --batch_size=4 --eval_iters=2 "
              "--eval_interval=4 --sample_tokens=20 --kernels=reference")
# (pattern, replacement) applied to every command that is run
SMALL = [
    (r"--max_iters=\d+", "--max_iters=4"),
    (r"--lr_decay_iters=\d+", "--lr_decay_iters=4"),
    (r"--epochs \d+", "--epochs 1"),
    (r"^(minillm pretrain .*?)(\s+#.*)?$", rf"\1 {TINY_MODEL}"),
    (r"^minillm finetune-demo-data --out demo\b", "minillm finetune-demo-data --out demo "
                                                   "--corpus corpus.txt --n-sft 64"),
]
SETUP = ("minillm pretrain --config shakespeare_char_tiny --corpus=corpus.txt --max_iters=8 "
         f"--lr_decay_iters=8 {TINY_MODEL}")

# Speeches for the speakers and prompts the README uses that the bundled sample lacks.
EXTRA_SPEECHES = """
ROMEO:
In sadness, cousin, I do love a woman.
A right good mark-man! And she's fair I love.
Is love a tender thing? it is too rough,
Too rude, too boisterous, and it pricks like thorn.
Being but heavy, I will bear the light.
He jests at scars that never felt a wound.
With love's light wings did I o'er-perch these walls;
For stony limits cannot hold love out.

JULIET:
O Romeo, Romeo! wherefore art thou Romeo?
Deny thy father and refuse thy name.

PETRUCHIO:
You lie, in faith; for you are call'd plain Kate,
And bonny Kate and sometimes Kate the curst;
But Kate, the prettiest Kate in Christendom,
Kate of Kate Hall, my super-dainty Kate,
For dainties are all Kates, and therefore, Kate,
Take this of me, Kate of my consolation;
Alas! good Kate, I will not burden thee;
For, knowing thee to be but young and light.

DUKE VINCENTIO:
Be absolute for death; either death or life
Shall thereby be the sweeter. Reason thus with life:
If I do lose thee, I do lose a thing
That none but fools would keep: a breath thou art,
Servile to all the skyey influences,
That dost this habitation, where thou keep'st,
Hourly afflict: merely, thou art death's fool;
For him thou labour'st by thy flight to shun.

KING RICHARD II:
For God's sake, let us sit upon the ground
And tell sad stories of the death of kings.
"""


def blocks(text):
    """[(language, first line number, lines)] of the fenced blocks of ``text``."""
    out, lang, start, body = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if lang is None and line.startswith("```") and line[3:].strip():
            lang, start, body = line[3:].strip(), n + 1, []
        elif lang is not None and line.startswith("```"):
            out.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def commands(lines, start):
    """[(line number, command)] of a bash block: continuation lines joined, comments dropped."""
    out, cur, at = [], "", start
    for n, line in enumerate(lines, start):
        if not cur:
            at = n
        cur += line.strip() if cur else line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip() and not cur.lstrip().startswith("#"):
            out.append((at, cur.strip()))
        cur = ""
    return out


def skip_reason(text):
    return next((why for pattern, why in SKIP if re.search(pattern, text, re.M)), None)


def small(command):
    for pattern, repl in SMALL:
        command = re.sub(pattern, repl, command)
    return command


def readme_steps():
    """[(id, kind, text)] of everything README.md says to run, in order."""
    steps = []
    for lang, start, body in blocks(README.read_text(encoding="utf-8")):
        if lang == "bash":
            for n, c in commands(body, start):
                shown = " ".join(c.split("  #")[0].split())[:50]
                steps.append((f"L{n}: {shown}", "bash", c))
        elif lang == "python":
            steps.append((f"L{start}: python", "python", "\n".join(body)))
    return steps


STEPS = readme_steps()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The folder the README's commands run in, after the `make demo` stand-in."""
    d = tmp_path_factory.mktemp("readme")
    sample = (ROOT / "notebooks" / "tiny_shakespeare_sample.txt").read_text(encoding="utf-8")
    (d / "corpus.txt").write_text(sample.rstrip("\n") + "\n\n" + EXTRA_SPEECHES.lstrip(),
                                  encoding="utf-8")
    (d / "my_texts").mkdir()  # the reader's own folder of .txt files
    (d / "my_texts" / "sample.txt").write_text(sample, encoding="utf-8")
    env = dict(os.environ, MINILLM_KERNELS="reference", MINILLM_CACHE=str(d / "cache"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    env.pop("MPLBACKEND", None)
    run_step("bash", SETUP, d, env)
    return d, env


def run_step(kind, text, cwd, env):
    argv = ["bash", "-c", text] if kind == "bash" else [sys.executable, "-c", text]
    p = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0 and "Traceback" not in p.stderr, (
        f"README {kind} failed (exit {p.returncode}):\n{text}\n--- stdout\n{p.stdout[-3000:]}"
        f"\n--- stderr\n{p.stderr[-3000:]}")
    return p


@pytest.mark.parametrize("kind, text", [s[1:] for s in STEPS], ids=[s[0] for s in STEPS])
def test_readme_step_runs(folder, kind, text):
    why = skip_reason(text)
    if why:
        pytest.skip(why)
    d, env = folder
    run_step(kind, small(text) if kind == "bash" else text, d, env)


def test_readme_has_commands_and_the_skip_table_stays_short():
    ran = " ".join(t for _, _, t in STEPS if skip_reason(t) is None)
    for command in ("prepare", "pretrain", "plot", "sample", "chat", "finetune", "classify"):
        assert f"minillm {command} " in ran, f"no README example of minillm {command} runs"
    assert len(SKIP) <= 7, "keep the skip table short"
    for pattern, why in SKIP:  # a rule that matches nothing is stale
        assert any(re.search(pattern, t, re.M) for _, _, t in STEPS), (pattern, why)
    for pattern, _ in SMALL:  # so is a small setting
        assert any(re.search(pattern, t) for _, k, t in STEPS if k == "bash"), pattern


def test_readme_extras_list_every_extra_of_pyproject():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    text = README.read_text(encoding="utf-8")
    listing = text[text.index("Without `make`"):].split("\n\n")[0]
    missing = [name for name in extras if f"`{name}`" not in listing]
    assert not missing, f"README's extras list lacks {missing}"
