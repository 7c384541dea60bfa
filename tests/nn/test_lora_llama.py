"""LoRA on Llama projections, on a float32 base and on a quantized (QLoRA) base."""

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm
from minillm.errors import ConfigError
from minillm.nn.lora import (
    LoRALinear,
    apply_lora,
    base_fingerprint,
    lora_layers,
    merge_lora,
    resolve_targets,
    unmerge_lora,
)
from minillm.nn.quant import QuantLinear, named_quant_weights
from minillm.optim import AdamW
from minillm.train.step import train_step


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "tiny.gguf"
    write_tiny_gguf(path)
    return path


def test_llama_target_names():
    assert resolve_targets("q,v") == ("self_attn.q_proj", "self_attn.v_proj")
    assert "mlp.down_proj" in resolve_targets("mlp") and "mlp.c_fc" in resolve_targets("mlp")
    assert set(resolve_targets("all")) >= {f"self_attn.{t}_proj" for t in "qkvo"}


def test_quant_base_stays_bit_identical_and_loss_falls(tiny_gguf):
    model, _ = minillm.load(tiny_gguf, dtype="stored")
    blocks = {n: w.blocks.copy() for n, w in named_quant_weights(model)}
    assert blocks  # the fixture stores Q4_0 / Q4_1 / Q8_0 matrices
    names = apply_lora(model, rank=4, alpha=8, targets="all")
    assert len(names) == 2 * 7
    quant = [m for _, m in lora_layers(model) if m.quant_base is not None]
    assert quant and all(m.lora_A.dtype == np.float32 for m in quant)
    fp = base_fingerprint(model, exclude={n for n, _ in model.named_parameters() if "lora" in n})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    model.train()
    rng = np.random.default_rng(0)
    x = rng.integers(3, model.config.vocab_size, size=(2, 12))
    y = np.roll(x, -1, axis=1)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = [train_step(model, opt, [(x, y)], 1.0, 1e-2)[0] for _ in range(15)]
    assert losses[-1] < losses[0] - 0.1
    for name, m in lora_layers(model):
        if m.quant_base is not None:
            np.testing.assert_array_equal(m.quant_base.blocks, blocks[f"{name}.weight"])
    assert base_fingerprint(model, exclude={n for n, _ in model.named_parameters()
                                            if "lora" in n}) == fp


def test_merge_equals_unmerged_float_and_quant(tiny_gguf):
    for dtype, tol in (("float32", 1e-4), ("stored", 2e-3)):
        model, _ = minillm.load(tiny_gguf, dtype=dtype)
        apply_lora(model, rank=4, alpha=8, targets="q,k,v,o,gate,up,down")
        rng = np.random.default_rng(1)
        for _, m in lora_layers(model):  # a non-zero update
            m.lora_B.data = (rng.standard_normal(m.lora_B.shape) * 0.05).astype(np.float32)
        model.eval()
        x = rng.integers(3, model.config.vocab_size, size=(1, 9))
        ref = model(x)[0].data.copy()
        merge_lora(model)
        np.testing.assert_allclose(model(x)[0].data, ref, atol=tol, rtol=tol)
        unmerge_lora(model)
        np.testing.assert_allclose(model(x)[0].data, ref, atol=1e-6, rtol=1e-6)
        for _, m in lora_layers(model):
            if m.quant_base is not None:
                assert m.weight is m.quant_base  # unmerge puts the blocks back


def test_lora_wraps_quantlinear_only_linear_kinds():
    with pytest.raises(ConfigError):
        LoRALinear(object())
    from minillm.nn.layers import Linear

    q = QuantLinear.from_linear(Linear(64, 8))
    lora = LoRALinear(q, rank=2)
    assert lora.quant_base is q.weight and "weight" not in dict(lora.named_parameters())
