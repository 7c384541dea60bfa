"""``minillm serve``: an OpenAI-compatible HTTP API and a chat page over minillm's own engine.

- ``kvcache.py``: ``RaggedKVCache``, a KV cache with one length per row (continuous batching
  with the models unchanged);
- ``engine.py``: ``Engine``, the generation loop on one thread (prefill alone, decode together,
  a bounded queue, per-request samplers and cancellation);
- ``protocol.py``: OpenAI's request checks, answer shapes and error shape;
- ``app.py``: the Starlette application (``create_app([ServedModel(...)])``);
- ``cli.py``: the ``minillm serve`` subcommand; ``static/chat.html``: the chat page.

Only app.py and cli.py need the ``serve`` extra (starlette, uvicorn), imported when used.

    from minillm.serve.app import ServedModel, create_app
    from minillm.serve.engine import Engine
    app = create_app([ServedModel("tiny", Engine(model, tokenizer), tokenizer)])
"""
