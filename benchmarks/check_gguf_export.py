"""Does llama.cpp load the GGUF files `minillm export --format gguf` writes, and does it answer
as it does on the original? A check, not a benchmark (nothing is timed). Needs
llama-cpp-python (optional, never a minillm dependency); minillm is not imported.

    minillm export --model smollm2-135m-instruct --out /tmp/exported.gguf --format gguf
    python benchmarks/check_gguf_export.py /tmp/exported.gguf \\
        --reference ~/.cache/minillm/models/SmolLM2-135M-Instruct.Q4_1.gguf

For each file: llama.cpp's token ids of a few tricky strings, the chat prompt rendered with the
file's own template, and llama.cpp's greedy reply; with --reference, whether they are equal.
(llama.cpp quantizes activations to 8 bits inside its Q4_1 products, so its reply on the Q4_1
file differs from the float32 model's; an export with --dtype stored should match the original
exactly, since its tensor blocks are the same bytes.)
"""

import argparse
import sys

STRINGS = ["What is the capital of France? 12345", "It's they're we've I'm he'd you'll",
           "naïve café 日本語 🤖", "  leading and trailing  ", "x1y22z333 3.14159"]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def facts(path, threads):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, verbose=False, seed=0)
    ids = [llm.tokenize(s.encode(), add_bos=False, special=True) for s in STRINGS]
    out = llm.create_chat_completion(MESSAGES, temperature=0.0, top_k=1, max_tokens=24)
    return {"ids": ids, "reply": out["choices"][0]["message"]["content"],
            "n_vocab": llm.n_vocab(), "n_params": llm._model.n_params()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("gguf")
    p.add_argument("--reference", default=None, help="the original file to compare with")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    mine = facts(args.gguf, args.threads)
    print(f"{args.gguf}: llama.cpp loaded {mine['n_params']:,} parameters, vocabulary "
          f"{mine['n_vocab']:,}; greedy reply {mine['reply']!r}")
    if args.reference is None:
        return 0
    ref = facts(args.reference, args.threads)
    print(f"{args.reference}: greedy reply {ref['reply']!r}")
    same_ids = mine["ids"] == ref["ids"]
    same = same_ids and mine["reply"] == ref["reply"] and mine["n_params"] == ref["n_params"]
    print(f"token ids equal: {same_ids}; reply equal: {mine['reply'] == ref['reply']}")
    print("OK: llama.cpp reads the export as the original" if same else "MISMATCH")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
