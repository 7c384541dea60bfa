"""Mixed precision (minillm/amp.py and the hooks in minillm/train/step.py) on the CPU: NumPy's
float16 and ml_dtypes' bfloat16 at small sizes, so the logic is tested without a GPU."""

import json
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import minillm as M
from minillm.amp import LossScaler, MixedPrecision, low_dtype
from minillm.errors import ConfigError
from minillm.models.gpt import GPT, GPTConfig
from minillm.optim import AdamW
from minillm.train.step import train_step

pytest.importorskip("ml_dtypes")

V, T, B = 13, 12, 6


def _model(seed=0):
    M.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=24, dropout=0.0))


def _pattern_batches(n, seed=0):
    """Rows of a repeating cycle (each token predicts the next): easy to learn, fast to see."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = rng.integers(0, V, (B, 1))
        seq = (start + np.arange(T + 1)[None, :]) % V  # (B, T+1)
        out.append((seq[:, :-1], seq[:, 1:]))
    return out


def _snapshot(model, opt):
    weights = {k: p.data.copy() for k, p in model.named_parameters()}
    state = {k: v.copy() for k, v in opt.state_arrays().items()}
    return weights, state, opt.step_count


def test_loss_scaler_halves_on_overflow_and_grows_after_clean_steps():
    s = LossScaler(init_scale=1024.0, growth_interval=3)
    assert s.update(True) and s.update(True) and s.scale == 1024.0
    assert not s.update(False) and s.scale == 512.0 and s.good_steps == 0 and s.skipped == 1
    for _ in range(3):
        assert s.update(True)
    assert s.scale == 1024.0 and s.good_steps == 0
    t = LossScaler()
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.state_dict() == s.state_dict()
    with pytest.raises(ConfigError):
        t.load_state_dict({"scale": -1.0, "good_steps": 0, "skipped": 0})
    with pytest.raises(ConfigError):
        LossScaler(backoff_factor=2.0)


def test_unknown_precision_is_one_clear_error(monkeypatch):
    with pytest.raises(ConfigError, match="float32, bfloat16, float16"):
        low_dtype("float8")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install ml_dtypes"):
        low_dtype("bfloat16")


def test_the_training_config_takes_the_low_precisions():
    from minillm.train.config import TrainConfig

    for d in ("float32", "float64", "bfloat16", "float16"):
        TrainConfig(dtype=d).validate()
    with pytest.raises(ConfigError, match="bfloat16 or float16"):
        TrainConfig(dtype="half").validate()


@pytest.mark.usefixtures("reference_kernels")
def test_an_overflow_skips_the_step_and_halves_the_scale():
    model = _model()
    opt = AdamW(model.parameters(), lr=1e-2)
    amp = MixedPrecision("float16", scaler=LossScaler(init_scale=2.0**10, growth_interval=1000))
    batches = _pattern_batches(3)
    loss, norm = train_step(model, opt, [batches[0]], 1.0, amp=amp)  # a clean step: state exists
    assert not amp.last_step_skipped and norm > 0 and opt.step_count == 1
    weights, state, count = _snapshot(model, opt)
    # 2^40 times the loss: the float16 gradients overflow (their largest finite value is 65504)
    amp.scaler.scale = 2.0**40
    loss, norm = train_step(model, opt, [batches[1]], 1.0, amp=amp)
    assert amp.last_step_skipped and norm == 0.0 and np.isfinite(loss)
    assert amp.scaler.scale == 2.0**39 and amp.scaler.skipped == 1 and amp.scaler.good_steps == 0
    after_w, after_s, after_count = _snapshot(model, opt)
    assert after_count == count
    for k in weights:
        np.testing.assert_array_equal(after_w[k], weights[k])
    for k in state:
        np.testing.assert_array_equal(after_s[k], state[k])
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.usefixtures("reference_kernels")
def test_the_scale_grows_after_n_clean_steps_and_master_weights_stay_float32():
    model = _model()
    opt = AdamW(model.parameters(), lr=1e-3)
    amp = MixedPrecision("float16", scaler=LossScaler(init_scale=256.0, growth_interval=3))
    for x, y in _pattern_batches(3):
        train_step(model, opt, [(x, y)], 1.0, amp=amp)
        assert not amp.last_step_skipped
    assert amp.scaler.scale == 512.0
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert all(v.dtype == np.float32 for v in opt.state_arrays().values())


@pytest.mark.usefixtures("reference_kernels")
def test_the_forward_and_backward_run_in_the_low_precision():
    model = _model()
    amp = MixedPrecision("bfloat16")
    seen = []
    with amp.low_precision(model.parameters()):
        x, y = _pattern_batches(1)[0]
        logits, loss = model(x, y)
        seen += [logits.dtype.name, loss.dtype.name]
        loss.backward()
        seen += sorted({p.grad.dtype.name for p in model.parameters()})
    assert seen == ["bfloat16", "float32", "bfloat16"]  # logits low, loss float32, grads low
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("kernels", ["reference", "auto"])
def test_a_tiny_model_learns_in_low_precision(dtype, kernels):
    prev = M.get_kernels()
    M.set_kernels(kernels)  # "auto": the Numba rungs decline low precision, the reference runs
    try:
        model = _model()
        opt = AdamW(model.parameters(), lr=1e-2)
        amp = MixedPrecision(dtype)
        losses = [train_step(model, opt, [b], 1.0, amp=amp)[0] for b in _pattern_batches(40)]
    finally:
        M.set_kernels(prev)
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert np.isfinite(losses).all()
    assert last < 0.5 * first, (first, last)  # ln(13) = 2.56 at the start
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_pretrain_keeps_the_loss_scaler_across_a_resume(tmp_path):
    from minillm.train.pretrain import pretrain
    from tests.train.test_pretrain import cfg_for, losses

    common = ["--max_iters=6", "--eval_interval=3", "--lr_decay_iters=6", "--dtype=float16"]
    a = cfg_for(tmp_path, *common, f"--out_dir={tmp_path / 'a'}")
    pretrain(a, progress=False, say=lambda *x: None)
    b = cfg_for(tmp_path, *common, "--max_iters=3", f"--out_dir={tmp_path / 'b'}")
    pretrain(b, progress=False, say=lambda *x: None)
    state = json.loads((tmp_path / "b" / "last" / "state.json").read_text())
    assert state["amp"]["dtype"] == "float16"
    assert state["amp"]["loss_scaler"]["good_steps"] + state["amp"]["loss_scaler"]["skipped"] == 3
    b.max_iters = 6
    pretrain(b, resume=True, progress=False, say=lambda *x: None)
    sa = json.loads((tmp_path / "a" / "last" / "state.json").read_text())["amp"]
    sb = json.loads((tmp_path / "b" / "last" / "state.json").read_text())["amp"]
    assert sa == sb and sb["loss_scaler"]["good_steps"] + sb["loss_scaler"]["skipped"] == 6
    la, lb = losses(tmp_path / "a" / "log.jsonl"), losses(tmp_path / "b" / "log.jsonl")
    assert la == lb and sorted(la) == list(range(1, 7))
    w = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in w.values())


def test_a_tiny_llama_learns_in_bfloat16():
    from minillm.models.llama import Llama, LlamaConfig

    M.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=V, block_size=T, n_layer=2, n_head=4, n_kv_head=2,
                              n_embd=32, intermediate_size=48))
    opt = AdamW(model.parameters(), lr=1e-2)
    amp = MixedPrecision("bfloat16")
    losses = [train_step(model, opt, [b], 1.0, amp=amp)[0] for b in _pattern_batches(30)]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert all(p.dtype == np.float32 for p in model.parameters())
