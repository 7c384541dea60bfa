"""The GPU code paths call nothing CuPy lacks and copy nothing to the host behind the code's back.

The paths (a tiny GPT and a tiny Llama: training steps with dropout, a LoRA fine-tuning step,
sampling with a KV cache) run on the CPU through tests/fake_cupy.py, a recording stand-in for
cupy, with every kernel on its reference (the fallback that runs on CuPy too); the CUDA kernels
themselves are covered by the gpu-marked tests. A fake finds calls; it says nothing about GPU
speed or results.
"""

import numpy as np
import pytest

import minillm as M
from minillm import backend
from minillm.kernels import registry
from minillm.models.gpt import GPT, GPTConfig
from minillm.models.llama import Llama, LlamaConfig
from minillm.optim import AdamW, clip_grad_norm_
from minillm.train.step import train_step
from tests import fake_cupy


@pytest.fixture()
def fake(monkeypatch):
    module = fake_cupy.install()
    previous = backend.use_device_module(module)
    # no CUDA ladders: every op runs kernels/reference.py on the fake's arrays
    monkeypatch.setitem(registry._tables, "cuda", {})
    registry.clear_cache()
    fake_cupy.REC.__init__()
    try:
        yield fake_cupy.REC
    finally:
        backend.use_device_module(previous)
        fake_cupy.uninstall()
        registry.clear_cache()


def _assert_clean(rec):
    assert not rec.violations, "calls that fail or copy to the host on a GPU:\n" + rec.report()


def _gpt(dropout=0.1):
    M.manual_seed(0)
    cfg = GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=dropout)
    return GPT(cfg)


def _llama(n_embd=16, intermediate_size=24):
    M.manual_seed(0)
    cfg = LlamaConfig(vocab_size=31, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
                      n_embd=n_embd, intermediate_size=intermediate_size)
    return Llama(cfg)


def _batches(V, n=2, B=3, T=11, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))) for _ in range(n)]


def test_the_fake_catches_what_cupy_would_refuse(fake):
    x = backend.to_device(np.arange(6.0).reshape(2, 3), "cuda")
    with pytest.raises(TypeError):
        np.asarray(x)
    np.add.at(x, [0, 0], 1.0)
    _ = x + np.ones(3)
    kinds = [k for k, _, _ in fake.violations]
    assert kinds == ["host copy", "lacks", "host copy"]
    float(x.sum())
    assert fake.syncs["float"] == 1
    m = backend.to_device(np.array([True, False]), "cuda")
    np.testing.assert_array_equal(backend.to_numpy(~m), [False, True])  # operators compute
    y = x.copy()
    y += 1.0
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(x) + 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_scatter_add_matches_add_at_on_both_array_modules(fake, dtype):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 5, 17)
    vals = rng.standard_normal((17, 3)).astype(dtype)
    want = np.zeros((5, 3))
    np.add.at(want, idx, vals.astype(np.float64))
    host = np.zeros((5, 3), dtype)
    backend.scatter_add(host, idx, vals)
    dev = backend.to_device(np.zeros((5, 3), dtype), "cuda")
    backend.scatter_add(dev, backend.to_device(idx, "cuda"), backend.to_device(vals, "cuda"))
    tol = 1e-12 if dtype == np.float64 else 1e-2  # float16: summed in float32, rounded once
    np.testing.assert_allclose(host, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(dev), want, rtol=tol, atol=tol)
    assert backend.to_numpy(dev).dtype == dtype
    assert fake.calls["cupyx.scatter_add"] == 1
    _assert_clean(fake)


def test_dropout_masks_are_drawn_on_the_device_and_follow_the_host_generator(fake):
    x = M.Tensor(backend.to_device(np.ones((4, 50), np.float32), "cuda"))
    M.manual_seed(3)
    a = backend.to_numpy(M.functional.dropout(x, 0.5).data)
    M.manual_seed(3)
    b = backend.to_numpy(M.functional.dropout(x, 0.5).data)
    np.testing.assert_array_equal(a, b)  # the saved host generator state decides the mask
    assert set(np.unique(a)) <= {0.0, 2.0} and 0 < (a == 0).sum() < a.size
    assert fake.calls["random.RandomState.random_sample"] == 2
    assert fake.syncs["get"] == 2  # the test's own two copies, nothing else
    _assert_clean(fake)


def test_clip_grad_norm_syncs_once_on_the_device(fake):
    rng = np.random.default_rng(2)
    ps = [M.Tensor(backend.to_device(rng.standard_normal(s).astype(np.float32), "cuda"),
                   requires_grad=True) for s in ((3, 4), (5,), (2, 2, 2))]
    for p in ps:
        p.grad = backend.to_device(rng.standard_normal(p.shape).astype(np.float32), "cuda")
    want = np.sqrt(sum((backend.to_numpy(p.grad).astype(np.float64) ** 2).sum() for p in ps))
    fake.reset_syncs()
    norm = clip_grad_norm_(ps, 0.5)
    assert norm == pytest.approx(want, rel=1e-12)
    assert sum(fake.syncs.values()) == 1
    total = np.sqrt(sum((backend.to_numpy(p.grad).astype(np.float64) ** 2).sum() for p in ps))
    assert total == pytest.approx(0.5, rel=1e-5)
    _assert_clean(fake)


@pytest.mark.parametrize("make", [_gpt, _llama], ids=["gpt", "llama"])
def test_training_steps_on_the_device(fake, make):
    model = make().to("cuda")
    opt = AdamW(model.parameters(), lr=1e-2)
    V = model.config.vocab_size
    losses = []
    for step in range(3):
        fake.reset_syncs()
        loss, norm = train_step(model, opt, _batches(V, n=2, seed=step), grad_clip=1.0)
        # per step: the loss (added up on the device over both micro-batches) and the norm
        assert sum(fake.syncs.values()) <= 2, dict(fake.sync_sites)
        losses.append(loss)
    assert all(np.isfinite(losses)) and np.isfinite(norm)
    # batches already on the device (benchmarks/gpu/train_gpt2.py) take the same path
    on_device = [tuple(backend.to_device(a, "cuda") for a in b) for b in _batches(V, n=1)]
    fake.reset_syncs()
    train_step(model, opt, on_device, grad_clip=1.0)
    assert sum(fake.syncs.values()) <= 2, dict(fake.sync_sites)
    _assert_clean(fake)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_steps_on_the_device(fake, dtype):
    pytest.importorskip("ml_dtypes")
    from minillm.amp import MixedPrecision

    model = _gpt().to("cuda")
    opt = AdamW(model.parameters(), lr=1e-2)
    amp = MixedPrecision(dtype)
    for step in range(2):
        fake.reset_syncs()
        loss, norm = train_step(model, opt, _batches(model.config.vocab_size, seed=step), 1.0,
                                amp=amp)
        assert sum(fake.syncs.values()) <= 2, dict(fake.sync_sites)  # the loss and the norm
    assert np.isfinite(loss) and all(p.dtype == np.float32 for p in model.parameters())
    _assert_clean(fake)


def test_lora_finetune_step_on_the_device(fake):
    from minillm.nn.lora import apply_lora

    model = _llama()
    apply_lora(model, rank=4, alpha=8.0, dropout=0.1, targets="all")
    model.to("cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(params, lr=1e-3)
    loss, norm = train_step(model, opt, _batches(model.config.vocab_size, n=1), grad_clip=1.0)
    assert np.isfinite(loss) and np.isfinite(norm)
    _assert_clean(fake)


@pytest.mark.parametrize("make", [_gpt, _llama], ids=["gpt", "llama"])
def test_sampling_with_a_kv_cache_on_the_device(fake, make):
    from minillm.sample import generate
    from minillm.tokenizers.char import CharTokenizer

    model = make().to("cuda")
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvw .\n")
    fake.reset_syncs()
    out = generate(model, tok, ["ab", "c d"], max_new_tokens=6, temperature=1.0, top_k=5, seed=0,
                   use_cache=True)
    assert len(out) == 2
    # one (B, V) logits copy per token, nothing else that stalls
    assert set(fake.syncs) <= {"get"} and fake.syncs["get"] <= 6, dict(fake.sync_sites)
    _assert_clean(fake)


def test_getitem_with_host_index_arrays_scatters_on_the_device(fake):
    x = M.Tensor(backend.to_device(np.arange(12.0).reshape(4, 3), "cuda"), requires_grad=True)
    y = x[np.array([0, 2, 0]), np.array([1, 1, 1])]  # a repeated index: its gradients add
    y.sum().backward()
    want = np.zeros((4, 3))
    want[0, 1], want[2, 1] = 2.0, 1.0
    np.testing.assert_array_equal(backend.to_numpy(x.grad), want)
    assert fake.calls["cupyx.scatter_add"] == 1
    _assert_clean(fake)


def test_quantized_llama_decoding_on_the_device(fake):
    from minillm.autograd import no_grad
    from minillm.kernels.quant import QuantWeight
    from minillm.nn.quant import QuantEmbedding, QuantLinear, quantize_linears

    model = _llama(n_embd=32, intermediate_size=64)  # whole 32-weight blocks
    quantize_linears(model, "q4_1")
    table = QuantWeight.from_float(model.embed_tokens.weight.data, "q4_1")
    model.embed_tokens, model.lm_head = QuantEmbedding(table), QuantLinear(table)
    model.to("cuda").eval()
    cache = model.new_kv_cache(1, max_len=12)
    with no_grad():
        logits, _ = model(np.array([[1, 2, 3]]), kv_cache=cache, last_only=True)
        fake.reset_syncs()
        for _ in range(4):
            nxt = logits.data[:, -1].argmax(axis=-1).reshape(1, 1)  # chosen on the device
            logits, _ = model(nxt, kv_cache=cache, last_only=True)
    assert backend.is_cupy(logits.data) and logits.shape == (1, 1, model.config.vocab_size)
    # the token ids cross to the host for the lookup in the blocks: one small copy per token
    assert sum(fake.syncs.values()) <= 4, dict(fake.sync_sites)
    _assert_clean(fake)
