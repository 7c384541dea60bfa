"""LoRA adapters in PEFT's layout: names, config, and the round trip through minillm.load."""

import json
import shutil

import numpy as np
import pytest
from gguf_fixtures import write_tiny_gguf

import minillm
from minillm.checkpoints.formats import read_safetensors
from minillm.checkpoints.peft import (
    HF_REPOS,
    base_reference,
    load_peft_into,
    minillm_name,
    peft_name,
    save_peft,
)
from minillm.errors import CheckpointError
from minillm.nn.lora import LoRAConfig, apply_lora, lora_layers


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("peft") / "tiny.gguf"
    write_tiny_gguf(path)
    return path


def test_names():
    name = "layers.3.self_attn.q_proj.lora_A"
    assert peft_name(name) == "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"
    assert minillm_name(peft_name(name)) == name
    assert peft_name("lm_head.lora_B") == "base_model.model.lm_head.lora_B.weight"
    assert minillm_name(peft_name("lm_head.lora_B")) == "lm_head.lora_B"
    with pytest.raises(CheckpointError):
        minillm_name("model.layers.0.self_attn.q_proj.weight")
    assert base_reference("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert HF_REPOS["smollm2-135m-instruct"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _adapted(path, dtype):
    model, tok = minillm.load(path, dtype=dtype)
    cfg = LoRAConfig(4, 8.0, 0.0, "q,v,down")
    apply_lora(model, cfg.rank, cfg.alpha, 0.0, cfg.targets)
    rng = np.random.default_rng(3)
    for _, m in lora_layers(model):
        m.lora_B.data = (rng.standard_normal(m.lora_B.shape) * 0.05).astype(np.float32)
    return model.eval(), cfg


@pytest.mark.parametrize("dtype", ["stored", "float32"])
def test_round_trip_same_logits(tiny_gguf, tmp_path, dtype):
    model, cfg = _adapted(tiny_gguf, dtype)
    x = np.array([[5, 9, 40, 7, 100, 3]])
    ref = model(x)[0].data.copy()
    out = tmp_path / "adapter"
    save_peft(out, model, cfg, tiny_gguf, base_dtype=dtype)
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == 4 and conf["lora_alpha"] == 8.0
    assert conf["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    assert conf["base_model_name_or_path"] == str(tiny_gguf.resolve())
    assert conf["minillm"]["base_dtype"] == dtype and len(conf["minillm"]["base_fingerprint"]) == 64
    tensors = read_safetensors(out / "adapter_model.safetensors")
    assert len(tensors) == 2 * 2 * 3
    a = tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    assert a.shape == (4, 64) and b.shape == (64, 4)
    loaded, tok = minillm.load(out)
    assert tok is not None and len(lora_layers(loaded)) == 6
    # float layers are merged on load (float32 rounding), layers over blocks stay unmerged
    assert all(m.merged == (m.quant_base is None) for _, m in lora_layers(loaded))
    np.testing.assert_allclose(loaded(x)[0].data, ref, atol=1e-4, rtol=1e-4)


def test_other_base_is_refused(tiny_gguf, tmp_path):
    model, cfg = _adapted(tiny_gguf, "stored")
    save_peft(tmp_path / "a", model, cfg, tiny_gguf, base_dtype="stored")
    other, _ = minillm.load(tiny_gguf, dtype="q8_0")  # the same weights in other blocks
    with pytest.raises(CheckpointError, match="other base weights"):
        load_peft_into(other, tmp_path / "a")
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "a", moved)  # the base is named by absolute path: still found
    assert len(lora_layers(minillm.load(moved)[0])) == 6
