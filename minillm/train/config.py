"""Training configuration: a typed dataclass with flat keys, from a TOML file plus overrides.

    cfg = load_config(TrainConfig, "configs/shakespeare_char_tiny.toml", ["--max_iters=500"])

A config name without a path ("shakespeare_char_tiny") is looked up in the configs shipped with
minillm. Overrides are ``--key=value`` or ``--key value`` (``-`` and ``_`` in keys are the same,
and each class has a few aliases, e.g. ``--lr`` for ``--learning_rate``); values are parsed as
the field's type, and ``\n``, ``\t``, ``\\`` in text values become the characters. Unknown
keys (with a suggestion) and values of the wrong type are ConfigErrors that name them. The names
follow nanoGPT (learning_rate, max_iters, lr_decay_iters, eval_interval, ...).

Every key has a line of help in ``HELP`` beside its class; ``keys_help`` prints them with their
defaults for ``minillm pretrain --help`` and ``minillm finetune --help``.
"""

import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from minillm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Range:
    """The values a number may take: finite, between ``low`` and ``high`` (None: no bound),
    each bound included unless ``*_open``."""

    low: float = None
    high: float = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def __str__(self):
        def num(x):
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"a finite number > {num(self.low)}" if self.low_open else f"at least {num(self.low)}"
        return "a finite number"


AT_LEAST_1, AT_LEAST_0 = Range(1), Range(0)
POSITIVE, FRACTION, OPEN_FRACTION = Range(0, low_open=True), Range(0, 1, high_open=True), Range(0, 1, True, True)

# Every number a training command takes, by name: the one table pretrain (TrainConfig fields),
# finetune (its keyword arguments) and the CLI check before any work is done.
CONSTRAINTS = {
    # model shape
    "n_layer": AT_LEAST_1, "n_head": AT_LEAST_1, "n_embd": AT_LEAST_1, "block_size": AT_LEAST_1,
    "vocab_size": Range(1), "dropout": FRACTION, "initializer_range": POSITIVE,
    # optimisation
    "batch_size": AT_LEAST_1, "gradient_accumulation_steps": AT_LEAST_1, "max_iters": AT_LEAST_0,
    "learning_rate": POSITIVE, "lr": POSITIVE, "min_lr": AT_LEAST_0, "warmup_iters": AT_LEAST_0,
    "lr_decay_iters": AT_LEAST_0, "weight_decay": AT_LEAST_0, "beta1": FRACTION, "beta2": FRACTION,
    "grad_clip": AT_LEAST_0, "epochs": AT_LEAST_1,
    # LoRA
    "rank": AT_LEAST_1, "alpha": POSITIVE, "lora_dropout": FRACTION, "freeze_last_k": AT_LEAST_0,
    # evaluation, logging, data
    "eval_interval": AT_LEAST_1, "eval_iters": AT_LEAST_1, "log_interval": AT_LEAST_1,
    "val_fraction": OPEN_FRACTION, "n_sft": AT_LEAST_1,
    # sampling
    "sample_tokens": AT_LEAST_0, "sample_temperature": AT_LEAST_0, "sample_top_k": AT_LEAST_0,
    # system
    "seed": Range(0, 2**32 - 1),
}


def check_values(values, source="", names=None):
    """ConfigError (one sentence naming the first bad value) unless every value in ``values``
    (name -> number; None = not given) holds its CONSTRAINTS entry. ``names``: the spelling to
    show, e.g. {"lr": "--lr"}."""
    for name, v in values.items():
        rule = CONSTRAINTS[name]
        if v is not None and not rule.holds(v):
            shown = (names or {}).get(name, name)
            where = f" ({source})" if source else ""
            raise ConfigError(f"{shown} must be {rule}, got {v!r}{where}")


def cli_values(**values):
    """check_values for command-line options, shown as ``--name-with-dashes``."""
    check_values(values, names={k: "--" + k.replace("_", "-") for k in values})


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out/shakespeare_char_tiny"
    data_dir: str = "data/shakespeare_char"
    # data preparation, used when data_dir holds no prepared data yet
    corpus: str = ""  # a text file or folder; "" = the built-in tiny Shakespeare
    tokenizer: str = "char"  # char | sentencepiece
    vocab_size: int = 2048  # sentencepiece only
    tokenizer_model: str = "bpe"  # sentencepiece: bpe | unigram
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    tie_word_embeddings: bool = True  # False: the LM head gets its own matrix
    initializer_range: float = 0.02  # std of the initial weights (GPT-2's)
    # optimisation (AdamW, nanoGPT's defaults for the Shakespeare runs)
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    decay_lr: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    gradient_checkpointing: bool = False  # recompute each block's activations in the backward
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    eval_only: bool = False
    # the sample printed at the end of training
    sample_tokens: int = 300
    sample_prompt: str = "\n"
    sample_temperature: float = 0.8
    sample_top_k: int = 200
    # system
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"
    kernels: str = "auto"  # auto | reference | numba
    plot: bool = True

    def validate(self):
        """Check every value before any work (CONSTRAINTS, then the relations between values)."""
        check_values({f.name: getattr(self, f.name) for f in fields(self) if f.name in CONSTRAINTS})
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.tokenizer not in ("char", "sentencepiece"):
            raise ConfigError(f"tokenizer must be 'char' or 'sentencepiece', got {self.tokenizer!r}")
        if self.tokenizer_model not in ("bpe", "unigram"):
            raise ConfigError(f"tokenizer_model must be 'bpe' or 'unigram', got {self.tokenizer_model!r}")
        if self.dtype not in ("float32", "float64", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, float64, bfloat16 or float16 (the last two: "
                              f"mixed precision with float32 master weights), got {self.dtype!r}")
        if self.kernels not in ("auto", "reference", "numba"):
            raise ConfigError(f"kernels must be auto, reference or numba, got {self.kernels!r}")
        if self.device.lower() != "cpu" and not self.device.lower().startswith("cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if not self.out_dir.strip() or not self.data_dir.strip():
            raise ConfigError("out_dir and data_dir must not be empty")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclass
class FinetuneConfig:
    """The settings of ``minillm finetune`` (the keyword arguments of train.finetune.finetune,
    under the command line's names)."""

    base: str = None
    data: str = None
    val_data: str = None
    task: str = None  # sft | classify | chat; None: from the JSONL keys
    method: str = "lora"  # lora | full
    rank: int = 8
    alpha: float = 16.0
    lora_dropout: float = 0.0
    targets: str = "attn,mlp"
    epochs: int = 3
    lr: float = None  # None: 1e-3 for LoRA, 1e-4 for full fine-tuning
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    block_size: int = None
    out: str = "out/finetune"
    freeze_last_k: int = None
    seed: int = 1337
    val_fraction: float = 0.1
    weight_decay: float = 0.0
    device: str = "cpu"
    precision: str = "float32"  # float32 | bfloat16 | float16 (mixed precision)

    def validate(self):
        """The choices; the numbers are checked by finetune() against CONSTRAINTS."""
        if not self.data:
            raise ConfigError("finetune needs --data FILE.jsonl (the training examples)")
        if self.task not in (None, "sft", "classify", "chat"):
            raise ConfigError(f"task must be sft, classify or chat, got {self.task!r}")
        if self.method not in ("lora", "full"):
            raise ConfigError(f"method must be lora or full, got {self.method!r}")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"precision must be float32, bfloat16 or float16, got "
                              f"{self.precision!r}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


# One line of help per config key, shown by `minillm pretrain --help` / `finetune --help`
# (tests/train/test_config_cli.py checks that every field has one).
HELP = {
    TrainConfig: {
        "out_dir": "output folder: best/ and last/ checkpoints, log.jsonl, loss.png",
        "data_dir": "prepared data (train.bin, val.bin, meta.json); prepared from corpus if absent",
        "corpus": "text file or folder of .txt files to prepare; empty: tiny Shakespeare",
        "tokenizer": "char or sentencepiece (when data_dir is prepared here)",
        "vocab_size": "sentencepiece vocabulary size",
        "tokenizer_model": "sentencepiece model type: bpe or unigram",
        "n_layer": "transformer blocks",
        "n_head": "attention heads per block",
        "n_embd": "embedding width (a multiple of n_head)",
        "block_size": "context length in tokens",
        "dropout": "dropout probability, in [0, 1)",
        "bias": "biases in Linear and LayerNorm layers",
        "tie_word_embeddings": "the LM head shares the token embedding matrix",
        "initializer_range": "standard deviation of the initial weights",
        "gradient_checkpointing": "recompute each block's activations in the backward pass "
                                  "(less memory, about a third more compute)",
        "batch_size": "sequences per micro-batch",
        "gradient_accumulation_steps": "micro-batches per optimizer step; under mpiexec -n N "
                                       "a multiple of N, split among the ranks",
        "max_iters": "optimizer steps in all",
        "learning_rate": "peak learning rate (after warmup)",
        "min_lr": "learning rate at the end of the cosine decay",
        "warmup_iters": "steps of linear warmup",
        "lr_decay_iters": "step where the cosine decay reaches min_lr",
        "decay_lr": "warmup + cosine schedule; false: constant learning_rate",
        "weight_decay": "AdamW weight decay (not on biases and LayerNorm)",
        "beta1": "AdamW beta1",
        "beta2": "AdamW beta2",
        "grad_clip": "clip the gradient norm to this; 0: no clipping",
        "eval_interval": "evaluate and checkpoint every this many steps",
        "eval_iters": "batches per loss estimate (fixed batches)",
        "log_interval": "log.jsonl record every this many steps",
        "eval_only": "evaluate once and stop, writing nothing",
        "sample_tokens": "tokens of the sample printed at the end; 0: none",
        "sample_prompt": "prompt of that sample",
        "sample_temperature": "temperature of that sample",
        "sample_top_k": "top-k of that sample; 0: no limit",
        "seed": "seed of weights, batches and dropout",
        "device": "cpu or cuda",
        "dtype": "float32 or float64",
        "kernels": "auto, reference (NumPy) or numba",
        "plot": "draw OUT_DIR/loss.png at the end (needs matplotlib)",
    },
    FinetuneConfig: {
        "base": "base checkpoint (a run folder with best/ or last/, or a checkpoint directory)",
        "data": "training data, a JSONL file (required)",
        "val_data": "validation JSONL; default: split off val_fraction of data",
        "task": "sft, classify or chat; default: from the JSONL keys",
        "method": "lora or full",
        "rank": "LoRA rank",
        "alpha": "LoRA alpha; the update is scaled by alpha/rank",
        "lora_dropout": "dropout on the LoRA input",
        "targets": "LoRA layers: attn, mlp, all, or a comma list",
        "epochs": "passes over the training data",
        "lr": "peak learning rate; default: 1e-3 for LoRA, 1e-4 for full",
        "batch_size": "examples per micro-batch",
        "gradient_accumulation_steps": "micro-batches of batch_size per optimizer step; under "
                                       "mpiexec -n N a multiple of N, split among the ranks",
        "block_size": "crop the context to this many tokens; default: the model's",
        "out": "output folder: best/, last/, log.jsonl",
        "freeze_last_k": "full: train only the last K blocks (+ final norm and tied head)",
        "seed": "seed of the split, batches and dropout",
        "val_fraction": "share of data held out for validation",
        "weight_decay": "AdamW weight decay",
        "device": "cpu or cuda",
        "precision": "compute precision: bfloat16 or float16 train in mixed precision with "
                     "float32 master weights",
    },
}

# Other names a key answers to (alias -> field): nanoGPT's and the fine-tuning command's
# spellings of the same setting, so that --lr and --learning_rate work with both commands.
ALIASES = {
    TrainConfig: {"lr": "learning_rate", "out": "out_dir"},
    FinetuneConfig: {"learning_rate": "lr", "out_dir": "out"},
}


def _key(name):
    """A key as the field name it spells: --Batch-Size -> batch_size."""
    return name.strip().lstrip("-").replace("-", "_").lower()


def _shown(value):
    """A default as it is typed: "text", 0.001, true."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def keys_help(cls, defaults=None, kebab=False, width=100):
    """The help text listing every key of ``cls``: its spellings, type, help and default
    (``defaults``: a config whose values to show, e.g. the default TOML file's; a default of
    None is left to the help text to explain)."""
    import textwrap

    defaults = defaults if defaults is not None else cls()
    aliases = {}
    for alias, name in ALIASES.get(cls, {}).items():
        aliases.setdefault(name, []).append(alias)
    lines = []
    for f in fields(cls):
        spellings = [n.replace("_", "-") if kebab else n for n in [f.name, *aliases.get(f.name, [])]]
        typ = f.type if isinstance(f.type, str) else f.type.__name__
        head = f"  {', '.join('--' + n for n in spellings)} {typ.upper()}"
        value = getattr(defaults, f.name)
        text = HELP.get(cls, {}).get(f.name, "")
        text += "" if value is None else f" (default: {_shown(value)})"
        body = textwrap.wrap(text, width - 32) or [""]
        lines += [f"{head:<32}{body[0]}"] if len(head) <= 30 else [head, " " * 32 + body[0]]
        lines += [" " * 32 + b for b in body[1:]]
    return "\n".join(lines)


def builtin_configs():
    """The names of the configs shipped with minillm (``--config NAME``)."""
    try:
        import minillm.configs as shipped
    except ImportError:
        return []
    return sorted({p.stem for d in shipped.__path__ for p in Path(d).glob("*.toml")})


def find_config(name_or_path):
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    if p.exists() and p.is_file():
        return p
    candidates = [p.with_suffix(".toml")]
    try:  # the configs shipped inside the package (configs/ is installed as minillm.configs)
        import minillm.configs as shipped

        for d in shipped.__path__:
            candidates.append(Path(d) / p.with_suffix(".toml").name)
    except ImportError:
        pass
    for c in candidates:
        if c.exists():
            return c
    names = ", ".join(builtin_configs()) or "none installed"
    raise ConfigError(f"no config file {name_or_path!r}: give a .toml path or a built-in name "
                      f"({names})")


def unescape(text):
    """Backslash escapes typed on a command line as the characters: ``\\n`` newline, ``\\t`` tab,
    ``\\r`` carriage return, ``\\\\`` one backslash; any other backslash stays as it is. (A shell
    passes "\\n" as two characters; `--stop "\\n\\n"` means two newlines.)"""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "ntr\\":
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _coerce(cls_field, value, source):
    """``value`` (from TOML or a command-line string) as the field's type, or a ConfigError."""
    name, typ = cls_field.name, cls_field.type
    typ = {"int": int, "float": float, "bool": bool, "str": str}.get(typ, typ)
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        if typ is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{name} must be true or false, got {value!r} ({source})")
        try:
            if typ is int:
                number = float(text)  # accepts 5000 and 5e3, refuses 2.5
                if number != int(number):
                    raise ValueError
                return int(number)
            return typ(text)
        except ValueError:
            raise ConfigError(f"{name} must be {typ.__name__}, got {value!r} ({source})") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is str and isinstance(value, str):
        return unescape(value) if source == "command line" else value
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {typ.__name__}, got {value!r} ({source})")
    return value


def suggest(word, names):
    """'; did you mean X or Y?' for the names in ``names`` close to ``word``, else ''."""
    close = difflib.get_close_matches(word, list(names), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def apply_overrides(cfg, items, source, also=()):
    """Set the fields ``items`` ((key, value) pairs) name, by name or alias, snake or kebab
    case. ``also``: other option names the command takes, offered as suggestions."""
    by_name = {f.name: f for f in fields(cfg)}
    aliases = ALIASES.get(type(cfg), {})
    for key, value in items:
        norm = _key(key)
        norm = aliases.get(norm, norm)
        if norm not in by_name:
            hint = suggest(norm, [*by_name, *aliases, *(_key(a) for a in also)])
            raise ConfigError(f"unknown config key {key!r} ({source}){hint}")
        setattr(cfg, norm, _coerce(by_name[norm], value, source))
    return cfg


def parse_cli_overrides(args):
    """['--lr=1e-3', '--max_iters', '10'] -> [('lr', '1e-3'), ('max_iters', '10')]."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r}; overrides look like --key=value")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            k, v = a[2:], args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override {a!r} has no value; write {a}=VALUE or {a} VALUE")
        out.append((k, v))
        i += 1
    return out


def load_config(cls, config=None, overrides=(), also=()):
    """``cls()`` updated by the TOML file ``config`` (path or built-in name) and ``overrides``
    (command-line words; ``also``: the command's other options, for suggestions)."""
    cfg = cls()
    if config:
        path = find_config(config)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML ({e})") from None
        apply_overrides(cfg, data.items(), str(path))
    apply_overrides(cfg, parse_cli_overrides(list(overrides)), "command line", also)
    return cfg.validate()


def dumps(cfg):
    return json.dumps(cfg.to_dict(), indent=2)
