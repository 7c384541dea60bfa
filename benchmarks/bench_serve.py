"""Serving throughput: N concurrent clients (1, 4, 8) each streaming a completion of --tokens
tokens from ``minillm serve``'s API; aggregate decode tokens/s, and time to first token p50/p95.

    python benchmarks/bench_serve.py --model smollm2-135m-instruct            # the real model
    python benchmarks/bench_serve.py --tiny --clients 1,2 --tokens 8           # a smoke check
    python benchmarks/bench_serve.py --ckpt model.gguf --llama-cpp            # + llama.cpp

The server runs in this process (uvicorn on 127.0.0.1, a free port, a background thread); the
clients are threads in a second process (as a server's clients would be: in the server's
process they would compete for its GIL) that read the event stream with the standard
library's http.client, as serving benchmarks do (vLLM's reads its streams by hand too): the
clients share the server's cores here, and the ``openai`` package (``--openai-client``) spent
0.33 ms of CPU per streamed token against 0.08, which at 8 clients slowed every decode step
by about a tenth. Each client sends a prompt of its
own (eight of about eight tokens; ``--same-prompt``: all the first one, which the server then
prefills once, as it does for ``n`` choices; ``--chat``: a question each through the chat
endpoint, so the model's template adds its system prompt, the prefix the server computes once
per batch) at temperature 0, all started together. Tokens are counted from the usage each stream
ends with (a completion that meets eos early counts what it made). Each client count runs
--rounds times, the counts taking turns round by round (a single round's p95 of one request
is one sample): the table shows the median round's aggregate rate and the time to first token
over every request of every round. Continuous batching should make the aggregate rate at 8
clients several times one client's (one decode step over 8 rows reads the weights once), and
keep the time to first token close to one prefill (an idle engine waits ``batch_wait`` for
clients that start together, so that they share it).

One request is checked against ``minillm.generate`` (greedy, the same prompt), after the
timings: a server that gives other text than the library has its timings withheld.

With ``--llama-cpp`` (needs ``llama-cpp-python[server]`` installed, and a GGUF --ckpt), the same
clients run against llama.cpp's own OpenAI-compatible server on the same file and thread count.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np

PROMPTS = ["The capital of France is a city where", "The largest ocean on Earth is the",
           "A good way to learn a new language is", "The best thing about summer holidays is",
           "In the morning, most people like to", "The printing press changed Europe because",
           "My favourite kind of music is the", "Mountains are formed over millions of years"]
PROMPT = PROMPTS[0]
QUESTIONS = ["What is the capital of France?", "Name three primary colours.",
             "What is 7 times 8?", "Write a haiku about rain.", "Who wrote Hamlet?",
             "How do plants make food?", "What is the largest planet?",
             "Give me a synonym for happy."]


def percentile(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def one_client(client, model, prompt, tokens, out, i, extra=None):
    """A completion of ``prompt`` (a str), or a chat reply to it (a message dict), through the
    ``openai`` client (--openai-client)."""
    t0 = time.perf_counter()
    first, n = None, 0
    options = dict(model=model, max_tokens=tokens, temperature=0, stream=True,
                   stream_options={"include_usage": True})
    if extra:
        options["extra_body"] = extra
    chat = isinstance(prompt, dict)
    stream = (client.chat.completions.create(messages=[prompt], **options) if chat else
              client.completions.create(prompt=prompt, **options))
    chunks = 0  # a server that sends no usage (llama.cpp's): one chunk a token
    for chunk in stream:
        text = chunk.choices and (chunk.choices[0].delta.content if chat else
                                  chunk.choices[0].text)
        if first is None and text:
            first = time.perf_counter() - t0
        chunks += bool(text)
        if getattr(chunk, "usage", None) is not None:
            n = chunk.usage.completion_tokens
    out[i] = (first if first is not None else time.perf_counter() - t0, n or chunks)


def _post(base_url, api_key, endpoint, body):
    """POST ``body`` (a dict, as JSON) to base_url + endpoint over the standard library's
    http.client: (connection, response), the response's status checked. Close the connection
    when done."""
    import http.client
    import json
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    try:
        conn.request("POST", url.path.rstrip("/") + endpoint, json.dumps(body),
                     {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"the server answered {resp.status}: {resp.read()[:200]!r}")
    except BaseException:
        conn.close()
        raise
    return conn, resp


def one_raw_client(base_url, api_key, model, prompt, tokens, out, i, extra=None):
    """The same request as ``one_client`` over the standard library's http.client, reading the
    server-sent events line by line: a serving benchmark's usual client (vLLM's reads the
    stream the same way), whose parsing takes a fraction of the openai client's CPU time, CPU
    time that here comes out of the server's own two cores."""
    import json

    chat = isinstance(prompt, dict)
    body = dict(model=model, max_tokens=tokens, temperature=0, stream=True,
                stream_options={"include_usage": True})
    body.update({"messages": [prompt]} if chat else {"prompt": prompt})
    body.update(extra or {})
    t0 = time.perf_counter()
    first, n, chunks = None, 0, 0
    conn, resp = _post(base_url, api_key, "/chat/completions" if chat else "/completions", body)
    try:
        for line in resp:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            choices = chunk.get("choices")
            text = choices and (choices[0]["delta"].get("content") if chat else
                                choices[0]["text"])
            if first is None and text:
                first = time.perf_counter() - t0
            chunks += bool(text)
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
    finally:
        conn.close()
    out[i] = (first if first is not None else time.perf_counter() - t0, n or chunks)


def run_rounds(base_url, model, prompts, counts, tokens, rounds, api_key="bench",
               openai_client=False, extra=None):
    """Each round runs run_clients once per client count in ``counts``, in turn (1, 4, 8, 1,
    4, 8, ...: a slow minute of a shared machine then falls on every count alike instead of
    on one, and the ratios stay fair), the clients in one process of their own. Per count:
    (clients, the median round's aggregate tokens/s, the median over rounds of that round's
    rate over the first count's in the same round, the time to first token p50 and p95 over
    every request of every round, the tokens of one round)."""
    runs = {n: [] for n in counts}
    with clients_process() as pool:
        for _ in range(rounds):
            for n in counts:
                runs[n].append(pool.submit(run_clients, base_url, model, prompts, n, tokens,
                                           api_key, openai_client, extra).result())
    out = []
    for n in counts:
        ttft = [t for _, ts, _ in runs[n] for t in ts]
        paired = [a[0] / max(b[0], 1e-9) for a, b in zip(runs[n], runs[counts[0]])]
        out.append((n, float(np.median([r for r, _, _ in runs[n]])), float(np.median(paired)),
                    percentile(ttft, 50), percentile(ttft, 95), runs[n][0][2]))
    return out


def clients_process():
    """One process for the client threads, as a server's clients would be: in the server's
    own process their JSON parsing would hold the GIL that the engine thread needs between
    its kernels (a decode step over 8 rows took 1.4x its time alone)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def run_clients(base_url, model, prompts, clients, tokens, api_key="bench",
                openai_client=False, extra=None):
    """One round, client i sending prompts[i % len(prompts)] (with the fields of ``extra`` in
    each request): (aggregate tokens/s, each request's time to first token, tokens made)."""
    out = [None] * clients
    if openai_client:
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
        target, head = one_client, (client, model)
    else:
        target, head = one_raw_client, (base_url, api_key, model)

    def run(i):
        try:
            target(*head, prompts[i % len(prompts)], tokens, out, i, extra)
        except Exception as e:  # (the server refused the request, or went away)
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    failed = [o for o in out if isinstance(o, Exception)]
    if failed:
        raise RuntimeError(f"a client's request failed: {failed[0]}")
    ttft = [o[0] for o in out]
    total = sum(o[1] for o in out)
    return total / wall, ttft, total


def complete(base_url, model, prompt, tokens, api_key="bench"):
    """One greedy completion's text, not streamed (over http.client: importing the openai
    package here would add its 70,000 objects to the server's process, and to each of its
    garbage collector's full passes)."""
    import json

    conn, resp = _post(base_url, api_key, "/completions",
                       dict(model=model, prompt=prompt, max_tokens=tokens, temperature=0))
    try:
        return json.loads(resp.read())["choices"][0]["text"]
    finally:
        conn.close()


class InProcessServer:
    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join()


def tiny_model():
    from minillm import backend
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import CharTokenizer

    backend.manual_seed(0)
    tok = CharTokenizer.from_text("".join(chr(c) for c in range(32, 127)))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=2,
                          n_embd=64, initializer_range=0.3))
    return model, tok


def llama_cpp_server(path, threads):
    """llama.cpp's server on a free port (a subprocess), or None when it is not installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp: llama_cpp is not installed (pip install 'llama-cpp-python[server]')")
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", path,
                             "--n_threads", str(threads), "--port", str(port),
                             "--host", "127.0.0.1", "--n_ctx", "2048",
                             # by default a new request cuts the running one short: queue them
                             "--interrupt_requests", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/models").status_code == 200:
                return proc, url + "/v1"
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    print("llama.cpp: its server did not start")
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="a built-in model name")
    src.add_argument("--ckpt", default=None, help="a model file or directory")
    src.add_argument("--tiny", action="store_true", help="a tiny random GPT (smoke check)")
    p.add_argument("--clients", default="1,4,8", help="comma-separated client counts")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per client")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3,
                   help="runs per client count: the median round's tokens/s, TTFT over all")
    p.add_argument("--same-prompt", action="store_true",
                   help="every client sends the first prompt (prefilled once)")
    p.add_argument("--chat", action="store_true",
                   help="chat completions: a question each, through the model's template")
    p.add_argument("--batch-wait", type=float, default=None,
                   help="seconds an idle engine waits for more requests (default: the "
                        "engine's own)")
    p.add_argument("--openai-client", action="store_true",
                   help="clients use the openai package (more CPU per chunk than the default "
                        "http.client reader, taken from the server's cores)")
    p.add_argument("--llama-cpp", action="store_true",
                   help="also run llama.cpp's server on the same GGUF --ckpt")
    p.add_argument("--ignore-eos", action="store_true",
                   help="every request runs to --tokens (the servers' ignore_eos, as vLLM's "
                        "benchmark sends it): no batch row ends early")
    p.add_argument("--activations", choices=("float32", "q8_0"), default="float32",
                   help="minillm serve's --activations: q8_0 rounds the quantized products' "
                        "inputs to 8 bits, as llama.cpp does")
    args = p.parse_args(argv)

    from minillm.serve.app import create_app, served_model

    if args.tiny:
        model, tok = tiny_model()
        name = "tiny"
    else:
        from minillm.serve.cli import load_model

        source = args.ckpt or args.model or "smollm2-135m-instruct"
        model, tok = load_model(source)
        name = "bench"
    from minillm.cli_models import apply_activations
    from minillm.errors import MinillmError

    try:
        apply_activations(model, args.activations)
    except MinillmError as e:
        sys.exit(f"bench_serve: {e}")
    counts = [int(c) for c in args.clients.split(",")]
    threads = int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))
    app = create_app([served_model(name, model, tok, max_batch=max(args.max_batch, max(counts)),
                                   queue_size=64, batch_wait=args.batch_wait)])
    prompts = QUESTIONS if args.chat else PROMPTS
    prompts = prompts[:1] if args.same_prompt else prompts
    if args.chat:
        prompts = [{"role": "user", "content": q} for q in prompts]
    try:
        return report(args, model, tok, name, app, prompts, counts, threads)
    except RuntimeError as e:  # one sentence, not a traceback
        sys.exit(f"bench_serve: {e}")


def report(args, model, tok, name, app, prompts, counts, threads):
    """Run the rounds against minillm's server (and llama.cpp's), check the greedy text and
    print the table; the rows."""
    import minillm

    rows = []
    extra = {"ignore_eos": True} if args.ignore_eos else None
    with InProcessServer(app) as server:
        got = complete(server.url + "/v1", name, PROMPT, args.tokens)  # also the warm-up
        rows += [("minillm",) + r for r in run_rounds(server.url + "/v1", name, prompts,
                                                       counts, args.tokens, args.rounds,
                                                       openai_client=args.openai_client,
                                                       extra=extra)]
    # The library's own greedy text, on this (main) thread only after the timings: once a
    # second thread has run Numba's parallel kernels, the engine thread's OpenMP team no
    # longer spins between kernels and a decode step takes about twice as long (PERF_NOTES).
    want = minillm.generate(model, tok, PROMPT, max_new_tokens=args.tokens, greedy=True)
    if got != want:
        sys.exit(f"the server's greedy text differs from minillm.generate's:\n{got!r}\n"
                 f"{want!r}\nits timings are not shown.")
    if args.llama_cpp:
        if not (args.ckpt and args.ckpt.endswith(".gguf")):
            print("llama.cpp: needs --ckpt FILE.gguf")
        else:
            started = llama_cpp_server(args.ckpt, threads)
            if started:
                proc, url = started
                try:
                    run_clients(url, "bench", prompts, 1, 2)
                    rows += [("llama.cpp",) + r for r in run_rounds(
                        url, "bench", prompts, counts, args.tokens, args.rounds,
                        openai_client=args.openai_client, extra=extra)]
                finally:
                    proc.terminate()
                    proc.wait()
    which = (f"prompt {prompts[0]!r} for all" if args.same_prompt else
             f"{len(prompts)} {'chat questions' if args.chat else 'prompts'}")
    print(f"{args.tokens} new tokens per client, {threads} threads, {which}, "
          f"activations {args.activations}{', ignore_eos' if args.ignore_eos else ''}")
    # "x first": the medians' ratio; "paired": the median of each round's own ratio (a slow
    # minute of the machine moves both rates of its round, and their ratio less)
    print(f"{'server':<10} {'clients':>7} {'tokens/s':>10} {'x first':>8} {'paired':>7} "
          f"{'TTFT p50 s':>11} {'TTFT p95 s':>11} {'tokens':>7}")
    base = {}
    for server_name, n, rate, paired, p50, p95, total in rows:
        base.setdefault(server_name, rate)
        print(f"{server_name:<10} {n:>7} {rate:>10.1f} {rate / max(base[server_name], 1e-9):>8.2f} "
              f"{paired:>7.2f} {p50:>11.3f} {p95:>11.3f} {total:>7}")
    return rows


if __name__ == "__main__":
    main()
