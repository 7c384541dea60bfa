"""The loss curve of a training run, drawn from its JSONL log (needs matplotlib)."""

import json
from pathlib import Path

from minillm.errors import DataError


def read_log(path):
    recs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            recs.append(json.loads(line))
    return recs


def plot_log(run_dir, out=None):
    """Write RUN_DIR/loss.png (or ``out``): training loss per logged step, and the train/val
    estimates at each evaluation. Returns the PNG path."""
    run_dir = Path(run_dir)
    log = run_dir / "log.jsonl" if run_dir.is_dir() else run_dir
    if not log.exists():
        raise DataError(f"no training log at {log}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(log)
    steps = [r for r in recs if "loss" in r]
    evals = [r for r in recs if "val_loss" in r]
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
