"""lm-evaluation-harness against ``minillm serve``: one multiple-choice task scored through the
OpenAI API (``lm_eval --model local-completions``) and by minillm itself in Python; the two
must pick the same answers and so give the same accuracy.

    python benchmarks/lm_eval_check.py                       # SmolLM2-135M-Instruct
    python benchmarks/lm_eval_check.py --ckpt model.gguf --limit 20

Optional and test-only: it needs lm-eval (``pip install lm-eval``, which brings PyTorch and
transformers: lm-eval's client side tokenizes with a Hugging Face tokenizer, written here from
the model's own) and the serve extra. Nothing is fetched: the task's questions are written by
this script (capitals of countries and sums of small numbers, four choices each, the wrong
ones drawn with a fixed seed) to a JSON-lines file, read by lm-eval as a local ``json``
dataset.

lm-eval scores a choice as the sum of the log-probabilities of its tokens after the question
(``echo`` with ``logprobs``: the server's prompt log-probabilities); minillm does the same with
one forward pass per choice (``score_choices``). The server's prompt runs through its batched
prefill, the script's through the model's forward: float32 rounding may differ, so per choice
the two sums are compared to 1e-3 and the answers must match.
"""

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TASK = "minillm_mc"
CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"),
    ("Egypt", "Cairo"), ("Greece", "Athens"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
    ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Kenya", "Nairobi"), ("India", "New Delhi"), ("Thailand", "Bangkok"),
    ("Argentina", "Buenos Aires"), ("Australia", "Canberra"), ("Turkey", "Ankara"),
    ("Hungary", "Budapest"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"),
)


def documents(seed=0):
    """The task: dicts with question, choices (4 strings) and answer (the right one's index)."""
    rng = random.Random(seed)
    docs = []
    capitals = [c for _, c in CAPITALS]
    for country, capital in CAPITALS:
        wrong = rng.sample([c for c in capitals if c != capital], 3)
        docs.append((f"Question: What is the capital of {country}?\nAnswer:", capital, wrong))
    for _ in range(20):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        wrong = rng.sample([a + b + d for d in (-10, -2, -1, 1, 2, 10) if a + b + d > 0], 3)
        docs.append((f"Question: What is {a} plus {b}?\nAnswer:", str(a + b),
                     [str(w) for w in wrong]))
    out = []
    for question, right, wrong in docs:
        choices = [right] + wrong
        rng.shuffle(choices)
        out.append({"question": question, "choices": choices, "answer": choices.index(right)})
    return out


def write_task(directory, docs):
    """A task lm-eval finds with --include_path: its YAML and its JSON-lines data."""
    data = Path(directory) / "minillm_mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (Path(directory) / "minillm_mc.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: question\n"
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8")


def write_hf_tokenizer(tok, directory, context):
    """The model's tokenizer as a Hugging Face directory (lm-eval's client side)."""
    from minillm.checkpoints import hf_llama

    cfg, special = hf_llama.tokenizer_config(tok, context)
    for name, obj in ((hf_llama.TOKENIZER_FILE, hf_llama.tokenizer_json(tok)),
                      (hf_llama.TOKENIZER_CONFIG_FILE, cfg),
                      (hf_llama.SPECIAL_TOKENS_FILE, special)):
        (Path(directory) / name).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def score_choices(model, tok, context, choices):
    """lm-eval's loglikelihood of each " " + choice after ``context``, by minillm: the sum of
    the log-probabilities of the choice's tokens (those the whole text has beyond the
    context's), from one forward pass over the whole text."""
    from minillm.autograd import no_grad

    ctx = tok.encode(context)
    scores = []
    for choice in choices:
        whole = tok.encode(context + " " + choice)
        cont = whole[len(ctx):]
        with no_grad():
            logits, _ = model(np.asarray([whole[:-1]]))
        z = np.asarray(logits.data[0], dtype=np.float64)  # (T - 1, V)
        lp = z - z.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        scores.append(float(sum(lp[len(ctx) - 1 + i, t] for i, t in enumerate(cont))))
    return scores


def lm_eval_command():
    exe = shutil.which("lm_eval")
    if exe:
        return [exe]
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "lm_eval"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="a built-in model name")
    src.add_argument("--ckpt", default=None, help="a model file or directory")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    args = p.parse_args(argv)
    command = lm_eval_command()
    if command is None:
        sys.exit("lm-eval is not installed (pip install lm-eval); nothing was run.")

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_serve import InProcessServer

    import minillm
    from minillm.serve.app import create_app, served_model

    model, tok = minillm.load(args.ckpt or args.model or "smollm2-135m-instruct")
    docs = documents()[: args.limit]
    app = create_app([served_model("minillm", model, tok)])
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("task", "tokenizer", "out"):
            os.mkdir(os.path.join(tmp, d))
        write_task(os.path.join(tmp, "task"), docs)
        write_hf_tokenizer(tok, os.path.join(tmp, "tokenizer"), model.config.block_size)
        with InProcessServer(app) as server:
            model_args = ",".join([
                "model=minillm", f"base_url={server.url}/v1/completions",
                "tokenizer_backend=huggingface", f"tokenizer={tmp}/tokenizer",
                "tokenized_requests=False", "num_concurrent=1", "max_retries=1"])
            env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                       TOKENIZERS_PARALLELISM="false")
            run = subprocess.run(command + [
                "--model", "local-completions", "--model_args", model_args,
                "--tasks", TASK, "--include_path", f"{tmp}/task", "--batch_size", "1",
                "--output_path", f"{tmp}/out", "--log_samples"], env=env,
                capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"lm_eval failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        results = json.load(open(glob.glob(f"{tmp}/out/**/results_*.json", recursive=True)[0]))
        samples = [json.loads(line) for f in glob.glob(f"{tmp}/out/**/samples_{TASK}_*.jsonl",
                                                       recursive=True) for line in open(f)]
    acc = results["results"][TASK]["acc,none"]
    samples.sort(key=lambda s: s["doc_id"])
    agree, worst, right = 0, 0.0, 0
    for s, doc in zip(samples, docs):
        served = [float(r[0]) for r in s["filtered_resps"]]
        ours = score_choices(model, tok, doc["question"], doc["choices"])
        gap = max(abs(a - b) for a, b in zip(served, ours))
        if gap > 1e-3:
            print(f"doc {s['doc_id']} {doc['question']!r} {doc['choices']}: lm-eval "
                  f"{np.round(served, 4).tolist()}, minillm {np.round(ours, 4).tolist()}")
        worst = max(worst, gap)
        agree += int(np.argmax(served) == np.argmax(ours))
        right += int(np.argmax(ours) == doc["answer"])
    print(f"{len(docs)} questions, 4 choices each ({TASK}: capitals and sums)")
    print(f"lm-eval local-completions through minillm serve: acc {acc:.4f}")
    print(f"minillm scoring in Python:                      acc {right / len(docs):.4f}")
    print(f"same answer on {agree} of {len(docs)}; largest log-likelihood difference "
          f"{worst:.2e}")
    if agree != len(docs) or abs(acc - right / len(docs)) > 1e-9 or worst > 1e-3:
        sys.exit("the server's scores differ from minillm's own.")


if __name__ == "__main__":
    main()
