"""LoRA: starts equal to the base, trains only A and B, merges/unmerges exactly, passes gradcheck,
and its adapters round-trip through disk and refuse a base they were not trained on."""

import numpy as np
import pytest

import minillm as M
from minillm.checkpoints import run as ckpt
from minillm.checkpoints.adapter import load_adapter, save_adapter
from minillm.errors import CheckpointError, ConfigError
from minillm.models import GPT, GPTConfig
from minillm.nn import Linear
from minillm.nn.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)
from minillm.optim import AdamW
from minillm.testing import gradcheck
from minillm.tokenizers import CharTokenizer
from minillm.train.step import train_step

CFG = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
IDX = np.arange(16).reshape(2, 8) % 13


def make(seed=0, **kw):
    M.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, **kw})).eval()


def randomize_B(model, seed=1):
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        layer.lora_B.data = (rng.standard_normal(layer.lora_B.shape) * 0.1).astype(
            layer.lora_B.dtype
        )


def test_lora_starts_equal_to_base_and_freezes_the_rest():
    m = make()
    before = m(IDX)[0].numpy()
    names = apply_lora(m, rank=4, alpha=8, targets="all")
    assert len(names) == 4 * CFG["n_layer"]
    np.testing.assert_array_equal(m(IDX)[0].numpy(), before)  # B = 0: no change at all
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    # base names survive, so a base state_dict still addresses the same tensors
    assert "h.0.attn.c_attn.weight" in m.state_dict() and "h.0.mlp.c_fc.bias" in m.state_dict()
    # r (in + out) per layer: c_attn 16->48, c_proj 16->16, c_fc 16->64, c_proj 64->16
    assert m.num_parameters(trainable_only=True) == 2 * 4 * (
        (16 + 48) + (16 + 16) + (16 + 64) + (64 + 16)
    )


@pytest.mark.parametrize(
    "targets, expect",
    [
        ("attn", {"attn.c_attn", "attn.c_proj"}),
        ("mlp", {"mlp.c_fc", "mlp.c_proj"}),
        ("attn.c_attn,mlp.c_fc", {"attn.c_attn", "mlp.c_fc"}),
    ],
)
def test_apply_lora_targets(targets, expect):
    m = make()
    apply_lora(m, rank=2, targets=targets)
    got = {n.split(".", 2)[2] for n, _ in lora_layers(m)}
    assert got == expect
    for name, mod in m.named_modules():
        if name.endswith(("c_attn", "c_proj", "c_fc")) and name.split(".", 2)[2] not in expect:
            assert type(mod) is Linear


def test_bad_targets_and_double_apply():
    with pytest.raises(ConfigError, match="no Linear layer"):
        apply_lora(make(), rank=2, targets="nonexistent")
    m = make()
    apply_lora(m, rank=2)
    with pytest.raises(ConfigError, match="already has LoRA"):
        apply_lora(m, rank=2)
    with pytest.raises(ConfigError, match="rank"):
        LoRAConfig(rank=0)


def test_training_leaves_every_base_weight_bit_identical():
    m = make()
    apply_lora(m, rank=4, alpha=8, targets="all")
    base = {n: p.data.copy() for n, p in m.named_parameters() if not p.requires_grad}
    opt = AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    m.train()
    losses = [train_step(m, opt, [(IDX, IDX)])[0] for _ in range(15)]
    assert losses[-1] < losses[0] - 0.05  # the adapters do learn
    for n, p in m.named_parameters():
        if n in base:
            assert np.array_equal(p.data, base[n]), n
    assert any(np.abs(layer.lora_B.data).max() > 0 for _, layer in lora_layers(m))


def test_merge_matches_unmerged_and_unmerge_restores_bits():
    m = make()
    apply_lora(m, rank=4, alpha=8)
    randomize_B(m)
    w0 = {n: p.data.copy() for n, p in m.named_parameters()}
    y = m(IDX)[0].numpy()
    merge_lora(m)
    assert all(layer.merged for _, layer in lora_layers(m))
    assert not np.array_equal(m.h[0].attn.c_attn.weight.data, w0["h.0.attn.c_attn.weight"])
    ym = m(IDX)[0].numpy()
    np.testing.assert_allclose(ym, y, rtol=1e-5, atol=1e-5)
    for _, layer in lora_layers(m):  # merged forward must not use A, B any more
        layer.lora_A.data = layer.lora_A.data * 0
    np.testing.assert_array_equal(m(IDX)[0].numpy(), ym)
    for _, layer in lora_layers(m):
        layer.lora_A.data = w0[_ + ".lora_A"]
    unmerge_lora(m)
    for n, p in m.named_parameters():
        assert np.array_equal(p.data, w0[n]), n
    np.testing.assert_array_equal(m(IDX)[0].numpy(), y)


@pytest.mark.parametrize("bias", [True, False])
def test_lora_linear_gradcheck(reference_kernels, bias):
    M.manual_seed(0)
    base = Linear(5, 7, bias=bias).to(dtype=np.float64)
    layer = LoRALinear(base, rank=3, alpha=6.0)
    layer.lora_B.data = np.random.default_rng(0).standard_normal((7, 3))  # so dA != 0
    x = M.Tensor(np.random.default_rng(1).standard_normal((2, 4, 5)), requires_grad=True)
    gradcheck(lambda x, A, B: layer(x), x, layer.lora_A, layer.lora_B)
    assert layer.weight.grad is None  # the frozen base gets no gradient
    # the delta is exactly (x A^T B^T) * alpha / r
    want = x.data @ base.weight.data.T + (x.data @ layer.lora_A.data.T @ layer.lora_B.data.T) * 2.0
    if bias:
        want = want + base.bias.data
    np.testing.assert_allclose(layer(x).data, want, rtol=1e-12)


def test_lora_dropout_only_in_training():
    M.manual_seed(0)
    layer = LoRALinear(Linear(8, 8), rank=2, alpha=2, dropout=0.5)
    layer.lora_B.data = np.ones((8, 2), np.float32)
    x = M.Tensor(np.ones((3, 8), np.float32))
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, layer(x).data)
    layer.train()
    assert not np.array_equal(layer(x).data, layer(x).data)


def test_adapter_save_load_reproduces_logits(tmp_path):
    base = make()
    ckpt.save(
        tmp_path / "base", base, tokenizer=CharTokenizer("abcdefghijkl")
    )  # 12 chars + eos = 13
    m = make()
    cfg = LoRAConfig(rank=4, alpha=8, targets="attn")
    apply_lora(m, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets)
    randomize_B(m)
    want = m(IDX)[0].numpy()
    save_adapter(tmp_path / "ad", m, cfg, tmp_path / "base")
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
    ]
    assert set(lora_state_dict(m)) == {
        n for n, p in m.named_parameters() if n.endswith(("lora_A", "lora_B"))
    }

    fresh = make()  # same base weights, no LoRA yet: load_adapter applies it
    load_adapter(fresh, tmp_path / "ad")
    np.testing.assert_array_equal(fresh.eval()(IDX)[0].numpy(), want)
    # minillm.load on the adapter directory loads base + adapter (merged), and the tokenizer
    lm, tok = M.load(tmp_path / "ad")
    assert tok.vocab_size == CFG["vocab_size"] and all(layer.merged for _, layer in lora_layers(lm))
    np.testing.assert_allclose(lm(IDX)[0].numpy(), want, rtol=1e-5, atol=1e-5)


def test_adapter_refuses_other_base(tmp_path):
    m = make()
    cfg = LoRAConfig(rank=4, alpha=8)
    apply_lora(m, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets)
    save_adapter(tmp_path / "ad", m, cfg, tmp_path / "base")
    with pytest.raises(CheckpointError, match="other base weights"):
        load_adapter(make(seed=1), tmp_path / "ad")  # same shapes, different weights
    other = make(n_embd=32)
    with pytest.raises(
        CheckpointError,
        match=r"h\.0\.attn\.c_attn\.lora_A is \(4, 16\) in the adapter but \(4, 32\)",
    ):
        load_adapter(other, tmp_path / "ad")
    wrong_rank = make()
    apply_lora(wrong_rank, rank=2, alpha=8)
    with pytest.raises(CheckpointError, match="lora_A is"):
        load_adapter(wrong_rank, tmp_path / "ad")
