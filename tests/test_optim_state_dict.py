"""Optimizer state_dict()/load_state_dict(): training continued from a saved state equals
training that was never interrupted, scheduler included."""

import copy

import numpy as np
import pytest

import minillm as M
from minillm import nn
from minillm.errors import ConfigError
from minillm.optim import SGD, AdamW, gpt_param_groups, lr_scheduler


def make_model():
    M.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))


X = np.random.default_rng(1).standard_normal((16, 4))
Y = np.random.default_rng(2).integers(0, 3, 16)


def train(model, opt, sched, steps, start):
    for i in range(start, start + steps):
        rows = slice((i * 4) % 16, (i * 4) % 16 + 4)
        loss = nn.CrossEntropyLoss()(model(M.tensor(X[rows])), M.tensor(Y[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_resume_from_state_dicts_equals_uninterrupted(kind):
    def build(model):
        if kind == "adamw":
            opt = AdamW(gpt_param_groups(model, 0.1), lr=1e-2, betas=(0.9, 0.95))
        else:
            opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        return opt, lr_scheduler.WarmupCosineLR(opt, warmup_iters=2, decay_iters=8, min_lr=1e-3)

    ref = make_model()
    opt, sched = build(ref)
    train(ref, opt, sched, 10, 0)

    first = make_model()
    opt1, sched1 = build(first)
    train(first, opt1, sched1, 4, 0)
    saved = (copy.deepcopy(first.state_dict()), opt1.state_dict(), sched1.state_dict())
    train(first, opt1, sched1, 3, 4)  # changes after the snapshot must not leak into it

    resumed = make_model()  # fresh weights and a fresh optimizer, then the saved state
    resumed.load_state_dict(saved[0])
    opt2, sched2 = build(resumed)
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    assert opt2.step_count == 4 and sched2.last_epoch == 4
    train(resumed, opt2, sched2, 6, 4)
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v, err_msg=k)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_state_dict_layout_and_mismatches():
    model = make_model()
    opt = AdamW(model.parameters(), lr=1e-3)
    train(model, opt, lr_scheduler.LambdaLR(opt, lambda s: 1.0), 1, 0)
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2, 3] and set(sd["state"][0]) == {"m", "v"}
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3] and sd["step"] == 1
    other = AdamW(nn.Linear(2, 2).parameters())
    with pytest.raises(ConfigError):
        other.load_state_dict(sd)
    with pytest.raises(ConfigError):
        opt.load_state_dict({"nope": 1})
