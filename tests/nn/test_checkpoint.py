"""Gradient checkpointing (minillm/nn/checkpoint.py) and the chunked loss switch of DecoderLM:
the same loss and the same gradients (float64, to rounding) with and without them, on Llama and
on GPT with dropout (the recomputed forward must draw the same masks), and on LoRA over a
quantized base (float32)."""

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm as M
from minillm.models import GPT, GPTConfig
from minillm.models.llama import Llama, LlamaConfig
from minillm.nn.checkpoint import checkpoint
from minillm.nn.lora import apply_lora, lora_layers
from minillm.testing import gradcheck

IGNORE = -100


def _batch(V, B=3, T=11, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T))
    y = np.roll(x, -1, axis=1)
    y[:, :4] = IGNORE  # a prompt that does not count
    y[0, -2:] = IGNORE  # padding
    return x, y


def _loss_and_grads(model, x, y, seed=0, **switches):
    for k, v in switches.items():
        setattr(model, k, v)
    for p in model.parameters():
        p.grad = None
    M.manual_seed(seed)
    loss = model(x, y)[1]
    loss.backward()
    grads = {n: p.grad.copy() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def _assert_same(a, b, rtol=1e-10, atol=1e-12):
    la, ga = a
    lb, gb = b
    np.testing.assert_allclose(la, lb, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        np.testing.assert_allclose(ga[n], gb[n], rtol=rtol, atol=atol, err_msg=n)


SWITCHES = [dict(gradient_checkpointing=True), dict(chunked_loss=True),
            dict(gradient_checkpointing=True, chunked_loss=True)]


@pytest.mark.parametrize("switches", SWITCHES, ids=["ckpt", "chunked", "both"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_llama_float64_same_loss_and_grads(switches, tied):
    M.manual_seed(1)
    cfg = LlamaConfig(vocab_size=53, block_size=16, n_layer=3, n_head=4, n_kv_head=2, n_embd=32,
                      intermediate_size=40, tie_word_embeddings=tied)
    model = Llama(cfg).to(dtype=np.float64).train()
    x, y = _batch(cfg.vocab_size)
    plain = _loss_and_grads(model, x, y)
    _assert_same(plain, _loss_and_grads(model, x, y, **switches))
    assert "embed_tokens.weight" in plain[1]  # the (tied) head's matrix got its gradient


@pytest.mark.parametrize("switches", SWITCHES, ids=["ckpt", "chunked", "both"])
def test_gpt_with_dropout_same_loss_and_grads(switches):
    M.manual_seed(2)
    cfg = GPTConfig(vocab_size=41, block_size=16, n_layer=2, n_head=2, n_embd=24, dropout=0.2)
    model = GPT(cfg).to(dtype=np.float64).train()
    x, y = _batch(cfg.vocab_size, seed=1)
    plain = _loss_and_grads(model, x, y, seed=7)
    _assert_same(plain, _loss_and_grads(model, x, y, seed=7, **switches))


def test_lora_on_quantized_base(tmp_path):
    """The demo's setting: LoRA on a GGUF base kept in blocks, chunked loss through the
    quantized head, checkpointed blocks: the adapters' gradients are those of the plain run."""
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    model, _ = M.load(path, dtype="stored")
    apply_lora(model, rank=4, alpha=8, targets="all")
    rng = np.random.default_rng(0)
    for _, m in lora_layers(model):  # B = 0 would make every gradient but B's vanish
        m.lora_B.data = (rng.standard_normal(m.lora_B.shape) * 0.05).astype(np.float32)
    model.train()
    x, y = _batch(model.config.vocab_size, B=2, T=9, seed=3)
    plain = _loss_and_grads(model, x, y)
    both = _loss_and_grads(model, x, y, gradient_checkpointing=True, chunked_loss=True)
    assert all(n.endswith(("lora_A", "lora_B")) for n in plain[1])
    _assert_same(plain, both, rtol=2e-4, atol=2e-6)


def test_no_checkpointing_in_eval_or_without_grad():
    """Inference paths are untouched: eval mode and no_grad run the blocks directly."""
    M.manual_seed(3)
    cfg = LlamaConfig(vocab_size=29, block_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=16,
                      intermediate_size=24)
    model = Llama(cfg)
    model.gradient_checkpointing = True
    x = np.arange(6).reshape(1, 6) % cfg.vocab_size
    assert not _checkpoint_nodes(model.eval()(x)[0])
    with M.no_grad():
        assert model.train()(x)[0]._ctx is None
    assert len(_checkpoint_nodes(model.train()(x)[0])) == cfg.n_layer


def _checkpoint_nodes(t):
    from minillm.autograd import _topological_order
    from minillm.nn.checkpoint import Checkpoint

    return [u for u in _topological_order(t) if isinstance(u._ctx, Checkpoint)]


def test_checkpoint_op_gradcheck():
    """checkpoint(fn, x, params) as an op: float64 finite differences for x and a parameter."""
    rng = np.random.default_rng(4)
    w = M.Tensor(rng.standard_normal((5, 7)), requires_grad=True)
    x = M.Tensor(rng.standard_normal((3, 7)), requires_grad=True)

    def fn(t):
        return (t @ w.T).tanh() * 2.0

    gradcheck(lambda a, b: checkpoint(fn, a, [b]), x, w)
