"""The nn pieces PyTorch users reach for: activation and loss modules, ``nn.functional`` (the
same functions as ``minillm.functional``), ``nn.utils.clip_grad_norm_`` and Sequential(*mods)."""

import math

import numpy as np
import pytest

import minillm as M
import minillm.nn.functional as F
from minillm import nn
from minillm.errors import ConfigError, MinillmError
from minillm.testing import gradcheck


def test_activation_modules_apply_their_function():
    x = M.tensor(np.linspace(-3, 3, 13))
    np.testing.assert_array_equal(nn.ReLU()(x).data, np.maximum(x.data, 0))
    np.testing.assert_array_equal(nn.GELU()(x).data, x.gelu().data)
    np.testing.assert_allclose(nn.SiLU()(x).data, x.data / (1 + np.exp(-x.data)), rtol=1e-12)
    np.testing.assert_allclose(nn.Tanh()(x).data, np.tanh(x.data), rtol=1e-12)
    np.testing.assert_allclose(nn.Softmax(dim=0)(x).data.sum(), 1.0)
    assert nn.Identity()(x) is x
    with pytest.raises(ConfigError):
        nn.GELU(approximate="none")


def test_sequential_takes_modules_as_arguments():
    M.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(m) == 3 and len(m.parameters()) == 4
    assert m(M.randn(5, 3)).shape == (5, 2)
    assert len(nn.Sequential([nn.ReLU(), nn.ReLU()])) == 2


def test_nn_functional_is_minillm_functional():
    import minillm.functional as MF

    for name in MF.__all__:
        assert getattr(F, name) is getattr(MF, name)
    for name in ("relu", "gelu", "silu", "softmax", "log_softmax", "cross_entropy", "linear",
                 "dropout", "layer_norm", "mse_loss"):
        assert callable(getattr(F, name))


@pytest.mark.usefixtures("reference_kernels")
def test_cross_entropy_loss_reductions():
    rng = np.random.default_rng(0)
    logits = M.Tensor(rng.standard_normal((6, 5)), requires_grad=True)
    targets = M.tensor([0, 4, -100, 2, 2, 1])
    logp = logits.data - np.log(np.exp(logits.data).sum(1, keepdims=True))
    per = np.array([-logp[i, t] if t != -100 else 0.0 for i, t in enumerate(targets.data)])
    np.testing.assert_allclose(nn.CrossEntropyLoss()(logits, targets).item(), per.sum() / 5)
    np.testing.assert_allclose(nn.CrossEntropyLoss(reduction="sum")(logits, targets).item(),
                               per.sum())
    np.testing.assert_allclose(F.cross_entropy(logits, targets, reduction="none").data, per,
                               rtol=1e-12)
    assert gradcheck(lambda x: F.cross_entropy(x, targets, reduction="none"), logits) <= 1e-6
    assert gradcheck(lambda x: F.cross_entropy(x, targets, reduction="sum"), logits) <= 1e-6
    with pytest.raises(ConfigError):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(MinillmError):
        F.cross_entropy(logits, targets, reduction="avg")


def test_mse_loss():
    a, b = M.tensor([1.0, 2.0, 4.0]), M.tensor([1.0, 0.0, 1.0])
    assert nn.MSELoss()(a, b).item() == pytest.approx(13 / 3)
    assert F.mse_loss(a, b, reduction="sum").item() == pytest.approx(13)


def test_clip_grad_norm_scales_and_returns_the_norm():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))
    c = nn.Parameter(np.zeros(1))  # no gradient: skipped
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([0.0, 4.0, 0.0])
    norm = nn.utils.clip_grad_norm_([a, b, c], max_norm=1.0)
    assert isinstance(norm, M.Tensor) and float(norm) == pytest.approx(5.0)
    total = math.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum())
    assert total == pytest.approx(1.0, rel=1e-5)
    a.grad = np.array([-3.0, 1.0])
    assert float(nn.utils.clip_grad_norm_(a, 10.0, norm_type=float("inf"))) == 3.0
    assert float(nn.utils.clip_grad_norm_(a, 10.0, norm_type=1)) == 4.0
    np.testing.assert_array_equal(a.grad, [-3.0, 1.0])  # under max_norm: unchanged
