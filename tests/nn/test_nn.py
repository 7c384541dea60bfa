"""Modules: registration, state dicts, freezing, train/eval, dropout behaviour."""

import numpy as np
import pytest

import minillm as M
from minillm import nn
from minillm.errors import MinillmError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.ln = nn.LayerNorm(3)
        self.blocks = nn.ModuleList([nn.Linear(3, 3, bias=False) for _ in range(2)])
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.ln(self.fc(x))
        for b in self.blocks:
            x = b(x)
        return self.drop(x)


def test_registration_and_names():
    m = Tiny()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc.weight", "fc.bias", "ln.weight", "ln.bias", "blocks.0.weight", "blocks.1.weight"]
    assert m.num_parameters() == 4 * 3 + 3 + 3 + 3 + 9 + 9
    assert len(list(m.modules())) == 7


def test_tied_parameter_listed_once():
    m = Tiny()
    m.blocks[1].weight = m.blocks[0].weight
    assert [n for n, _ in m.named_parameters()].count("blocks.1.weight") == 0


def test_state_dict_round_trip_and_errors():
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    x = M.randn(2, 4)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    sd = dict(a.state_dict())
    sd.pop("ln.bias")
    sd["extra.weight"] = np.zeros(3)
    sd["fc.weight"] = np.zeros((5, 4))
    with pytest.raises(MinillmError) as e:
        b.load_state_dict(sd)
    msg = str(e.value)
    assert "missing keys: ln.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "fc.weight: checkpoint (5, 4) vs model (3, 4)" in msg


def test_freeze_and_zero_grad():
    m = Tiny()
    m.fc.requires_grad_(False)
    m(M.randn(2, 4)).sum().backward()
    assert m.fc.weight.grad is None and m.blocks[0].weight.grad is not None
    assert m.num_parameters(trainable_only=True) == m.num_parameters() - 15
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_eval_disables_dropout_train_enables_it():
    m = Tiny()
    x = M.randn(8, 4)
    m.train()
    assert not np.array_equal(m(x).numpy(), m(x).numpy())
    m.eval()
    assert not m.drop.training
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())


def test_linear_matches_numpy():
    lin = nn.Linear(5, 2)
    x = np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32)
    want = x @ lin.weight.numpy().T + lin.bias.numpy()
    np.testing.assert_allclose(lin(M.tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)


def test_module_to_float64():
    m = Tiny().to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in m.parameters())
