"""Every file format minillm reads or writes, and the one loader, ``load``.

    atomic.py     atomic writes of a file or a directory, and the repair after a crash
    formats.py    safetensors and JSON: checked reading, safetensors writing
    run.py        minillm's own checkpoints (weights, config, optimizer, state, tokenizer) and
                  a run folder's best/ and last/
    adapter.py    LoRA adapters (the adapter tensors and the base they belong to)
    hf_gpt2.py    Hugging Face GPT-2 directories: import and export
    hf_llama.py   Hugging Face Llama directories: import and export
    loader.py     load(path_or_name) -> (model, tokenizer) for any of them

Importing this package registers ``load`` as the loader behind ``GPT.from_pretrained``.
"""

from minillm.checkpoints.loader import load

__all__ = ["load"]
