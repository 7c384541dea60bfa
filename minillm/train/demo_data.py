"""Demo fine-tuning data made from tiny Shakespeare (or any corpus in its "SPEAKER:" format).

The corpus is a sequence of speeches separated by blank lines; each speech is a line "NAME:"
followed by the lines that character speaks. From it:

- ``sft.jsonl``: {"prompt": "Continue the speech of NAME:\\n<a line>", "response": "<the line
  that follows it in the same speech>"}: line pairs from speeches of every character, at most
  ``n_sft`` of them, drawn with ``seed``.
- ``classify.jsonl``: {"text": "<one or two consecutive lines of a speech>", "label": NAME} for
  four major characters from four different plays (Romeo; Menenius, Coriolanus; Petruchio, The
  Taming of the Shrew; Duke Vincentio, Measure for Measure), the same number of examples for
  each (chance accuracy is 25%). Different plays give different names and topics ("Juliet",
  "Rome", "Kate", "friar"), which a small character-level model can pick up.

Both files are deterministic given the corpus and the seed.
"""

import json
from pathlib import Path

import numpy as np

from minillm.checkpoints.atomic import write_file
from minillm.errors import DataError

CLASSIFY_SPEAKERS = ("ROMEO", "MENENIUS", "PETRUCHIO", "DUKE VINCENTIO")


def speeches(text):
    """[(speaker, [line, ...]), ...] for every "NAME:" block of the corpus."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.strip("\n").split("\n") if ln.strip()]
        if len(lines) >= 2 and lines[0].endswith(":") and lines[0][:-1].strip():
            out.append((lines[0][:-1].strip(), [ln.strip() for ln in lines[1:]]))
    return out


def sft_records(sp, n_max, rng):
    pairs = []
    for name, lines in sp:
        for i in range(0, len(lines) - 1, 2):  # non-overlapping (line, next line) pairs
            pairs.append(
                {"prompt": f"Continue the speech of {name}:\n{lines[i]}", "response": lines[i + 1]}
            )
    pick = rng.permutation(len(pairs))[:n_max]
    return [pairs[i] for i in sorted(pick)]


def classify_records(sp, speakers, rng, lines_per_example=2):
    by = {s: [] for s in speakers}
    for name, lines in sp:
        if name in by:
            for i in range(0, len(lines), lines_per_example):
                by[name].append(" ".join(lines[i : i + lines_per_example]))
    missing = [s for s, texts in by.items() if not texts]
    if missing:
        raise DataError(f"the corpus has no speeches by {', '.join(missing)}")
    n = min(len(t) for t in by.values())  # balanced classes
    recs = []
    for s in speakers:
        keep = sorted(rng.permutation(len(by[s]))[:n])
        recs.extend({"text": by[s][i], "label": s} for i in keep)
    return [recs[i] for i in rng.permutation(len(recs))]


def _write_jsonl(path, records):
    write_file(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())


def make_demo_data(out_dir, corpus=None, seed=0, n_sft=2000, speakers=CLASSIFY_SPEAKERS):
    """Write OUT_DIR/sft.jsonl and OUT_DIR/classify.jsonl; returns {"sft": n, "classify": n}.
    ``corpus``: a text file (default: tiny Shakespeare, downloaded and cached on first use)."""
    from minillm.data import default_corpus, read_corpus
    from minillm.train.config import check_values

    check_values({"n_sft": n_sft, "seed": seed})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # a path that cannot be a folder fails before any work
    text = read_corpus(corpus if corpus is not None else default_corpus())
    sp = speeches(text)
    if not sp:
        raise DataError("the corpus has no 'NAME:' speeches to make demo data from")
    rng = np.random.default_rng(seed)
    sft = sft_records(sp, n_sft, rng)
    cls = classify_records(sp, speakers, rng)
    _write_jsonl(out / "sft.jsonl", sft)
    _write_jsonl(out / "classify.jsonl", cls)
    return {"sft": len(sft), "classify": len(cls)}
