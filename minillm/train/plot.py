"""The loss curve of a training run, drawn from its JSONL log (needs matplotlib)."""

import json
from pathlib import Path

from minillm.errors import DataError, MinillmError


class NoMatplotlib(MinillmError):
    """matplotlib, the one package a plot needs, is missing (the ``plot`` extra)."""


def read_log(path):
    """The records of a JSONL log. Lines that are not JSON objects (a partial last line a kill
    left) are skipped; a file with none at all is a DataError."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a training log") from None
    recs, bad = [], 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            recs.append(rec)
        else:
            bad += 1
    if bad and not recs:
        raise DataError(f"{path} is not a training log (no line is a JSON record with a step)")
    return recs


def _numbers(recs, *keys):
    """The records whose ``keys`` are all numbers (a damaged record is left out of the plot)."""
    return [r for r in recs if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                   for k in keys)]


def plot_log(run_dir, out=None):
    """Write RUN_DIR/loss.png (or ``out``): training loss per logged step, and the train/val
    estimates at each evaluation. Returns the PNG path."""
    run_dir = Path(run_dir)
    log = run_dir / "log.jsonl" if run_dir.is_dir() else run_dir
    if not log.exists():
        raise DataError(f"no training log at {log}")
    recs = read_log(log)
    try:
        import matplotlib
    except ImportError:
        raise NoMatplotlib("plotting needs matplotlib, which is not installed: "
                           "pip install 'minillm[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = _numbers(recs, "step", "loss")
    evals = _numbers(recs, "step", "train_loss", "val_loss")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6,
                label="train (batch)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train (eval)")
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val (eval)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(f"minillm pretraining: {run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out) if out else (log.parent / "loss.png")
    fig.savefig(out)
    plt.close(fig)
    return out
