"""minillm on the GPU: Tensor.to("cuda"), a tiny GPT forward/backward on cuda against the same
model on the CPU (same loss and gradients to FP32 tolerance), and a few pretraining steps with
device=cuda. Marker ``gpu``: skipped cleanly without CuPy or a CUDA device (run with
``pytest -m gpu tests/test_cuda_backend.py`` on a GPU machine).
"""

import json

import numpy as np
import pytest

import minillm as M
from minillm import backend
from minillm.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")


@pytest.fixture(scope="module", autouse=True)
def gpu():
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        pytest.skip(f"no usable CUDA device: {e}")
    if n < 1:
        pytest.skip("no CUDA device")


def test_tensor_to_cuda_and_back():
    x = M.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    g = x.to("cuda")
    assert g.device == "cuda" and backend.is_cupy(g.data) and g.requires_grad
    y = (g * g).sum()
    y.backward()
    assert g.grad is not None and backend.is_cupy(g.grad)
    np.testing.assert_allclose(backend.to_numpy(g.grad), 2 * x.data)
    back = g.to("cpu")
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.data, x.data)


def _tiny_gpt(seed=0):
    M.manual_seed(seed)
    # head dim 64 so that attention takes the flash kernel (v1, FP32) on the GPU
    cfg = GPTConfig(vocab_size=97, block_size=40, n_layer=2, n_head=2, n_embd=128, dropout=0.0)
    return GPT(cfg)


@pytest.mark.parametrize("kernels", ["reference", "auto"])
def test_tiny_gpt_forward_backward_matches_cpu(kernels):
    prev = M.get_kernels()
    M.set_kernels(kernels)
    try:
        rng = np.random.default_rng(0)
        idx = rng.integers(0, 97, (3, 37))
        tgt = rng.integers(0, 97, (3, 37))
        tgt[0, :5] = -100  # ignored positions take the same path on both devices

        cpu = _tiny_gpt()
        logits_c, loss_c = cpu(idx, tgt)
        loss_c.backward()

        gpu_model = _tiny_gpt().to("cuda")
        logits_g, loss_g = gpu_model(idx, tgt)
        assert backend.is_cupy(logits_g.data)
        loss_g.backward()

        np.testing.assert_allclose(
            float(backend.to_numpy(loss_g.data)), float(loss_c.data), rtol=1e-5
        )
        np.testing.assert_allclose(
            backend.to_numpy(logits_g.data), logits_c.data, rtol=1e-4, atol=1e-4
        )
        grads_c = dict(cpu.named_parameters())
        for name, p in gpu_model.named_parameters():
            gc, gg = grads_c[name].grad, backend.to_numpy(p.grad)
            err = np.linalg.norm(gg - gc) / max(np.linalg.norm(gc), 1e-12)
            assert err < 1e-4, f"{name}: ||grad_cuda - grad_cpu|| / ||grad_cpu|| = {err:.2e}"
    finally:
        M.set_kernels(prev)


def test_a_few_pretraining_steps_on_cuda(tmp_path):
    from minillm.train.config import TrainConfig, load_config
    from minillm.train.pretrain import pretrain

    words = "the king queen lord speak thou art thy good night day love death sword".split()
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, 6)) + "." for _ in range(800)) + "\n")
    cfg = load_config(
        TrainConfig,
        "shakespeare_char_tiny",
        [
            f"--corpus={corpus}",
            f"--data_dir={tmp_path / 'data'}",
            f"--out_dir={tmp_path / 'out'}",
            "--n_layer=2",
            "--n_head=2",
            "--n_embd=128",
            "--block_size=32",
            "--batch_size=4",
            "--max_iters=20",
            "--eval_interval=10",
            "--eval_iters=2",
            "--log_interval=1",
            "--warmup_iters=2",
            "--lr_decay_iters=20",
            "--learning_rate=1e-2",
            "--sample_tokens=0",
            "--plot=false",
            "--device=cuda",
        ],
    )
    s = pretrain(cfg, progress=False, say=lambda *a: None)
    recs = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 10, 20]
    assert all(np.isfinite(r["val_loss"]) for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert s["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert (tmp_path / "out" / "last" / "model.safetensors").exists()
