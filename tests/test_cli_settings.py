"""The command line as a newcomer types it: config keys listed by --help from the config
dataclasses, both spellings of every key and option, a suggestion for a typo, the built-in
configs named, --stop escapes typed in a shell, and one sentence when `plot` lacks matplotlib."""

import dataclasses
import json
import sys

import pytest

from minillm import sample as S
from minillm.checkpoints.run import save
from minillm.cli import main
from minillm.train import finetune as finetune_module
from minillm.train.config import (
    HELP,
    FinetuneConfig,
    TrainConfig,
    builtin_configs,
    load_config,
    unescape,
)
from tests.test_sample import make_model


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``minillm ARGV``; --help exits through SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_sentence(err):
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- --help
@pytest.mark.parametrize("command, cls, spell", [
    ("pretrain", TrainConfig, lambda n: n),
    ("finetune", FinetuneConfig, lambda n: n.replace("_", "-")),
])
def test_help_lists_every_config_key_with_its_default(capsys, command, cls, spell):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    for f in dataclasses.fields(cls):
        line = next((x for x in out.splitlines() if x.strip().startswith(f"--{spell(f.name)} ")
                     or x.strip().startswith(f"--{spell(f.name)},")), None)
        assert line is not None, f"{f.name} missing from {command} --help"
        assert HELP[cls][f.name][:20] in out, f.name
    assert "--lr" in out and "learning" in out  # the alias is shown beside its key


def test_pretrain_help_shows_the_default_configs_values(capsys):
    _, out, _ = run(capsys, "pretrain", "--help")
    # shakespeare_char_tiny.toml sets 0.06 (the dataclass says 0.02): the default run's value
    line = next(x for x in out.splitlines() if "--initializer_range" in x)
    assert "(default: 0.06)" in line
    for name in builtin_configs():
        assert name in out


def test_every_config_field_has_help():
    for cls in (TrainConfig, FinetuneConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert names == set(HELP[cls]), (cls.__name__, names ^ set(HELP[cls]))


# ----------------------------------------------------------------------------- spellings
def test_pretrain_keys_take_aliases_both_cases_and_both_forms():
    cfg = load_config(TrainConfig, None, ["--lr=3e-4", "--batch-size", "7", "--max_iters", "50",
                                          "--lr-decay-iters=50", "--out", "x/run"])
    assert (cfg.learning_rate, cfg.batch_size, cfg.max_iters, cfg.lr_decay_iters, cfg.out_dir) == (
        3e-4, 7, 50, 50, "x/run")


def test_finetune_keys_take_aliases_both_cases_and_both_forms():
    cfg = load_config(FinetuneConfig, None, ["--data", "d.jsonl", "--learning_rate=2e-3",
                                             "--batch_size", "4", "--block-size=32",
                                             "--out_dir", "runs/x", "--lora_dropout", "0.1"])
    assert (cfg.lr, cfg.batch_size, cfg.block_size, cfg.out, cfg.lora_dropout) == (
        2e-3, 4, 32, "runs/x", 0.1)


def test_finetune_command_passes_either_spelling_to_the_library(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_finetune(base, data, **kw):
        seen.update(base=base, data=data, **kw)
        return {"steps": 1, "sec_per_step": 0.1, "best": {"val_loss": 1.0}, "out_dir": kw["out_dir"]}

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    code, out, err = run(capsys, "finetune", "--base", "b", "--data=d.jsonl", "--task", "sft",
                         "--learning_rate", "5e-4", "--batch_size=3", "--epochs", "2", "--out_dir", str(tmp_path / "o"),
                         "--no_progress")
    assert code == 0, err
    assert (seen["lr"], seen["batch_size"], seen["epochs"], seen["progress"]) == (5e-4, 3, 2, False)
    assert seen["out_dir"] == str(tmp_path / "o") and seen["task"] == "sft"


@pytest.mark.parametrize("argv, hint", [
    (["pretrain", "--learning_rat=1e-3"], "did you mean learning_rate"),
    (["pretrain", "--max-itres", "5"], "did you mean max_iters"),
    (["finetune", "--data", "d.jsonl", "--batchsize", "4"], "did you mean batch_size"),
    (["finetune", "--data", "d.jsonl", "--learning_rat", "1e-3"], "did you mean learning_rate"),
    (["finetune", "--data", "d.jsonl", "--max-step", "3"], "did you mean max_steps"),
    (["sample", "--ckpt", "x", "--temprature", "1"], "did you mean --temperature"),
])
def test_unknown_key_is_one_sentence_with_a_suggestion(capsys, argv, hint):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert hint in one_sentence(err), err


def test_unknown_config_lists_the_built_in_configs(capsys):
    code, _, err = run(capsys, "pretrain", "--config", "nope")
    assert code == 2
    for name in ("shakespeare_char_tiny", "shakespeare_char", "shakespeare_spm"):
        assert name in one_sentence(err)


def test_argparse_options_take_snake_case_too(tmp_path, capsys):
    tok_model = _checkpoint(tmp_path)
    a = run(capsys, "sample", "--ckpt", str(tok_model), "--max_new_tokens", "5", "--seed=1",
            "--top_k", "0", "--prompt", "the")
    b = run(capsys, "sample", "--ckpt", str(tok_model), "--max-new-tokens", "5", "--seed=1",
            "--top-k", "0", "--prompt", "the")
    assert a[0] == 0 and a == b


# ----------------------------------------------------------------------------- --stop
def test_unescape_turns_typed_escapes_into_characters():
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"a\tb\\n") == "a\tb\\n"  # \\ is one backslash, then a plain n
    assert unescape(r"C:\path") == r"C:\path"  # other backslashes stay
    assert unescape("é\\n") == "é\n"  # text beyond ASCII is kept (unicode_escape garbled it)
    assert unescape("trailing\\") == "trailing\\"


def _checkpoint(tmp_path):
    from minillm.tokenizers import CharTokenizer
    from tests.test_sample import CORPUS

    tok = CharTokenizer.from_text(CORPUS)
    d = tmp_path / "model"
    save(d, make_model(tok), tokenizer=tok)
    return d


def test_sample_stop_typed_as_backslash_n_stops_at_a_newline(tmp_path, capsys):
    from minillm.checkpoints import load

    ckpt = _checkpoint(tmp_path)
    model, tok = load(ckpt)
    # a prompt whose greedy continuation holds a newline (checked, so the test can fail)
    prompt = next(p for p in ("the", "User:", "hello", "fox", "dog!", "quick", "w", "a", "o")
                  if "\n" in S.generate(model, tok, p, max_new_tokens=60, greedy=True))
    want = S.generate(model, tok, prompt, max_new_tokens=60, greedy=True, stop=["\n"])
    code, out, err = run(capsys, "sample", "--ckpt", str(ckpt), "--prompt", prompt, "--greedy",
                         "--max-new-tokens", "60", "--stop", r"\n")
    assert code == 0, err
    assert out == f"{prompt}{want}\n---------------\n"
    assert "\n" not in want


# ----------------------------------------------------------------------------- plot
def test_plot_without_matplotlib_is_one_sentence(tmp_path, capsys, monkeypatch):
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.5}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run(capsys, "plot", str(tmp_path))
    assert code == 2
    assert "pip install 'minillm[plot]'" in one_sentence(err)
