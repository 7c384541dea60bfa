"""minillm: a from-scratch deep-learning framework for language models.

Three levels: use a model as it is (``generate``), fine-tune it (``finetune``), or build your
own (tokenizer, ``prepare``, ``pretrain``). Importing minillm needs only NumPy: Numba kernels
load on first use, CuPy only when a tensor moves to the GPU.
"""

__version__ = "0.1.0"

from minillm import (
    _env,  # noqa: E402,F401  (thread and BLAS settings, before NumPy loads)
    functional,  # noqa: E402
)
from minillm import sample as _sample  # noqa: E402,F401  (registers model.generate's loop)
from minillm.autograd import enable_grad, inference_mode, is_grad_enabled, no_grad  # noqa: E402
from minillm.backend import get_kernels, manual_seed, set_kernels  # noqa: E402
from minillm.checkpoints import load  # noqa: E402  (also registers GPT.from_pretrained's loader)
from minillm.errors import MinillmError  # noqa: E402
from minillm.ops import cat, clamp, concat, matmul, stack, where  # noqa: E402
from minillm.tensor import (  # noqa: E402
    Tensor,
    arange,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    rand_like,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)

__all__ = [
    "Tensor", "tensor", "zeros", "ones", "randn", "arange", "cat", "concat", "stack", "where",
    "zeros_like", "ones_like", "full", "full_like", "rand", "rand_like", "randn_like", "matmul",
    "clamp", "no_grad", "enable_grad", "inference_mode", "is_grad_enabled", "manual_seed", "set_kernels", "get_kernels",
    "functional", "MinillmError", "__version__", "generate", "stream", "load", "save", "finetune",
]


def generate(model, tokenizer, prompt, **options):
    """The continuation of ``prompt`` (a str, or a list of str for a batch) by ``model``;
    token ids (a list of ints, an array or Tensor (T,) or (B, T)) give token ids back, as
    Hugging Face's ``generate`` (``tokenizer`` may then be None).

    Options, with the defaults of ``minillm sample``: max_new_tokens=256 (or max_length,
    counting the prompt), temperature=0.8, top_k=200, top_p=None, greedy=False (or
    do_sample=True), num_return_sequences=1, seed=None, stop=None (str or list),
    repetition_penalty=1.0, use_cache=True, eos_token_id, pad_token_id; see
    ``minillm.sample.generate``.
    """
    return _sample.generate(model, tokenizer, prompt, **options)


def stream(model, tokenizer, prompt, **options):
    """Like ``generate`` for one prompt, yielding the text piece by piece as it is produced."""
    return _sample.stream(model, tokenizer, prompt, **options)


def save(model, directory, config=None, tokenizer=None):
    """Save a model's weights and config (and tokenizer) to ``directory`` (safetensors + JSON,
    atomic); ``load(directory)`` gives them back."""
    from minillm.checkpoints import run

    run.save(directory, model, config=config, tokenizer=tokenizer)


def finetune(base, data, **options):
    """Fine-tune the checkpoint ``base`` on a JSONL file (SFT or classification, LoRA or full);
    see ``minillm.train.finetune.finetune`` for the options. Returns a summary dict."""
    from minillm.train.finetune import finetune as _finetune

    return _finetune(base, data, **options)
