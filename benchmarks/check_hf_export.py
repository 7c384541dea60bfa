"""Does transformers load minillm's Hugging Face Llama export, and does it compute what minillm
computes? A check, not a benchmark (nothing is timed).

Two steps, because minillm and transformers + PyTorch need not live in one environment:

    # 1. with minillm's Python: export the model and write minillm's answers beside it
    python benchmarks/check_hf_export.py export --model smollm2-135m-instruct --out /tmp/hf
    # 2. with a Python that has transformers and torch (minillm is not imported)
    python benchmarks/check_hf_export.py compare /tmp/hf

Step 1 writes the directory (``minillm export`` does the same) and ``/tmp/hf.minillm.npz``:
token ids of tricky strings, the chat prompt rendered from the model's template and its ids,
minillm's logits over that prompt (float32 weights as the export holds them) and its greedy
reply. Step 2 loads the directory with AutoTokenizer and AutoModelForCausalLM and compares: the
same ids for every string, the same rendered prompt, logits within float32 rounding, the same
greedy reply. ``all`` does both in one interpreter that has everything.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STRINGS = [
    "What is the capital of France? 12345", "It's they're we've I'm he'd you'll",
    "  leading and trailing  ", "tabs\tand\r\nwindows line ends", "naïve café 日本語 🤖",
    "x1y22z333 3.14159 1,000,000", "\u00a0non-breaking\u2003spaces", "١٢٣ arabic digits",
    "<|im_start|>user\nhi<|im_end|>\n", "a<|im_end|>b<|endoftext|>", "\n\n\n",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
NEW_TOKENS = 16


def reference_path(out):
    return Path(str(Path(out)) + ".minillm.npz")


def export(args):
    import minillm
    from minillm.checkpoints.hf_llama import export_hf_llama
    from minillm.tokenizers.chat_template import render_chat

    model, tok = minillm.load(args.ckpt or args.model)
    export_hf_llama(model, tok, args.out)
    model, tok = minillm.load(args.out)  # the exported float32 weights, as transformers sees them
    prompt = render_chat(tok.chat_template, MESSAGES, add_generation_prompt=True)
    ids = tok.encode(prompt)
    out, _ = model(np.asarray([ids]))
    reply = []
    cache = model.new_kv_cache(1)
    step, _ = model(np.asarray([ids]), kv_cache=cache, last_only=True)
    for _ in range(NEW_TOKENS):  # greedy, with the KV cache
        nxt = int(np.argmax(step.data[0, -1]))
        reply.append(nxt)
        if nxt == tok.eos_id:
            break
        step, _ = model(np.asarray([[nxt]]), kv_cache=cache)
    facts = {"strings": STRINGS, "ids": [tok.encode(s) for s in STRINGS], "prompt": prompt,
             "prompt_ids": ids, "reply_ids": reply, "reply": tok.decode(reply)}
    np.savez(reference_path(args.out), logits=np.asarray(out.data[0], dtype=np.float32),
             facts=np.frombuffer(json.dumps(facts).encode(), dtype=np.uint8))
    print(f"exported to {args.out}; minillm's reply: {facts['reply']!r}")


def compare(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = np.load(reference_path(args.out))
    facts = json.loads(ref["facts"].tobytes())
    tok = AutoTokenizer.from_pretrained(args.out)
    bad = 0
    for s, want in zip(facts["strings"], facts["ids"]):
        got = tok(s, add_special_tokens=True)["input_ids"]
        if got != want:
            bad += 1
            print(f"ids differ for {s!r}:\n  transformers {got}\n  minillm      {want}")
    print(f"token ids: {len(facts['strings']) - bad}/{len(facts['strings'])} strings equal")
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    print(f"chat template renders the same prompt: {prompt == facts['prompt']}")
    ids = tok(facts["prompt"], add_special_tokens=True)["input_ids"]
    print(f"prompt ids equal: {ids == facts['prompt_ids']} ({len(ids)} tokens)")
    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([facts["prompt_ids"]])).logits[0].numpy()
        gen = model.generate(torch.tensor([facts["prompt_ids"]]), max_new_tokens=NEW_TOKENS,
                             do_sample=False, eos_token_id=model.config.eos_token_id)
    mine = ref["logits"]
    diff = np.abs(logits - mine)
    print(f"logits: max |transformers - minillm| = {diff.max():.3g} (logits' std "
          f"{mine.std():.3g}); argmax equal at {np.mean(logits.argmax(-1) == mine.argmax(-1)):.0%}"
          " of positions")
    reply = gen[0, len(facts["prompt_ids"]):].tolist()
    print(f"greedy reply: transformers {tok.decode(reply, skip_special_tokens=True)!r}, "
          f"minillm {facts['reply']!r}; ids equal: {reply == facts['reply_ids']}")
    ok = (bad == 0 and prompt == facts["prompt"] and ids == facts["prompt_ids"]
          and diff.max() < 1e-3 * max(1.0, np.abs(mine).max()) and reply == facts["reply_ids"])
    print("OK: transformers loads the export and agrees" if ok else "MISMATCH")
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    for name in ("export", "all"):
        e = sub.add_parser(name)
        src = e.add_mutually_exclusive_group(required=True)
        src.add_argument("--ckpt")
        src.add_argument("--model")
        e.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("out")
    args = p.parse_args(argv)
    if args.step in ("export", "all"):
        export(args)
    if args.step in ("compare", "all"):
        return compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
