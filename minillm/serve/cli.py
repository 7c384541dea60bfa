"""``minillm serve``: the OpenAI-compatible server on one model, on loopback by default.

    minillm serve --model smollm2-135m-instruct --port 8000
    minillm serve --ckpt out/shakespeare_char_tiny --host 0.0.0.0 --api-key SECRET
    minillm serve --ckpt out/base --adapter out/lora_a --adapter out/lora_b

Each ``--adapter DIR`` is served as one more model id (the folder's name): its base with the
adapter merged in, a model of its own with its own engine (so memory grows by one model per
adapter; the engines take turns on the CPU).
"""

import ipaddress
import socket
from pathlib import Path

from minillm.cli_models import add_activations_flag, apply_activations
from minillm.errors import MinillmError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def add_serve(sub):
    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve one model at /v1/models, /v1/chat/completions and /v1/completions "
                    "(OpenAI's shapes, streaming included), /health, and a chat page at /.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="a built-in model name (default: smollm2-135m-instruct)")
    src.add_argument("--ckpt", default=None,
                     help="a model file or directory minillm loads (its runs, GGUF, HF GPT-2)")
    p.add_argument("--dtype", choices=("stored", "float32", "q8_0"), default=None,
                   help="GGUF weights in memory: as the file stores them (default), float32, "
                        "or requantized to q8_0")
    add_activations_flag(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--adapter", action="append", default=[], metavar="DIR",
                   help="a LoRA adapter folder, served as one more model id (repeatable)")
    p.add_argument("--base", metavar="PATH_OR_NAME", default=None,
                   help="the base model of the LoRA adapters served (--ckpt or --adapter), for "
                        "runs whose base has moved (checked by fingerprint)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: 8000)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 requests")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without --api-key")
    p.add_argument("--max-batch", type=int, default=8,
                   help="requests decoded together (default: %(default)s)")
    p.add_argument("--queue", type=int, default=64,
                   help="requests that may wait for a batch row before 503 (default: %(default)s)")
    p.add_argument("--batch-wait", type=float, default=0.02, metavar="SECONDS",
                   help="an idle server's wait for more requests to share the first one's "
                        "prefill (default: %(default)s; 0: none)")
    p.set_defaults(run=run_serve)


def is_loopback(host):
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host, api_key, insecure):
    """Refuse (one sentence) to expose the server beyond this machine without a key."""
    if not is_loopback(host) and not api_key and not insecure:
        raise MinillmError(f"--host {host} reaches beyond this machine: give --api-key KEY "
                           f"(or --insecure to serve without one).")


def load_model(name_or_path, **options):
    """(model, tokenizer) of a built-in name or a path, through minillm's one loader; the
    tokenizer carries the chat template as ``tokenizer.chat_template`` (None if none)."""
    import minillm

    return minillm.load(name_or_path, **options)


def _bind(host, port):
    """A listening socket on host:port (port 0: a free one, chosen by the system)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise MinillmError(f"cannot listen on {host}:{port} ({e.strerror}).") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_serve(args):
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise MinillmError("minillm serve needs starlette and uvicorn: "
                           "pip install 'minillm[serve]'.") from None
    from minillm.checkpoints.builtin import DEFAULT_CHAT_MODEL
    from minillm.checkpoints.loader import is_adapter
    from minillm.serve.app import create_app, served_model

    check_bind(args.host, args.api_key, args.insecure)
    if not 0 <= args.port <= 65535:
        raise MinillmError(f"--port must be 0..65535, got {args.port}.")
    if args.max_batch < 1 or args.queue < 1:
        raise MinillmError("--max-batch and --queue must be at least 1.")
    if not 0 <= args.batch_wait <= 10:
        raise MinillmError(f"--batch-wait is seconds from 0 to 10, got {args.batch_wait}.")
    source = args.ckpt or args.model or DEFAULT_CHAT_MODEL
    name = args.model or (Path(args.ckpt).stem if args.ckpt else DEFAULT_CHAT_MODEL)
    sources = [(name, source)] + [(Path(a).resolve().name, a) for a in args.adapter]
    names = [n for n, _ in sources]
    if len(set(names)) != len(names):
        raise MinillmError(f"two models would have one id ({', '.join(names)}); give the "
                           f"adapter folders distinct names.")
    if args.base and not any(is_adapter(p) for _, p in sources):
        raise MinillmError("--base names the base of a LoRA adapter, and no served model "
                           "(--ckpt, --adapter) is one.")
    served = []
    for model_id, path in sources:
        options = {"device": args.device}
        if args.dtype and path == source:  # GGUF weights of the served model (not adapters)
            options["dtype"] = args.dtype
        if args.base and is_adapter(path):
            options["base"] = args.base
        model, tokenizer = load_model(path, **options)
        apply_activations(model, args.activations)
        served.append(served_model(model_id, model, tokenizer, max_batch=args.max_batch,
                                   queue_size=args.queue, batch_wait=args.batch_wait))
    app = create_app(served, api_key=args.api_key)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"minillm serve: {name} at http://{shown}:{port}/ (API at http://{shown}:{port}/v1)",
          flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
