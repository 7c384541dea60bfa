"""optim.lr_scheduler against PyTorch's formulas: the lr at construction is step 0's, each
step() advances one; state_dict round trip."""

import math

import pytest

from minillm import nn
from minillm.errors import ConfigError
from minillm.optim import SGD, cosine_lr, lr_scheduler


def lrs(make, n=12, base=0.5):
    opt = SGD([nn.Parameter([1.0])], lr=base)
    sched = make(opt)
    out = [opt.param_groups[0]["lr"]]
    for _ in range(n - 1):
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    assert sched.get_last_lr() == [out[-1]]
    return out


def test_lambda_lr():
    assert lrs(lambda o: lr_scheduler.LambdaLR(o, lambda s: 0.9 ** s)) == \
        pytest.approx([0.5 * 0.9 ** s for s in range(12)])


def test_step_lr():
    assert lrs(lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5)) == \
        pytest.approx([0.5 * 0.5 ** (s // 3) for s in range(12)])


def test_linear_lr():
    got = lrs(lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4))
    assert got == pytest.approx([0.5 * f for f in (0.25, 0.4375, 0.625, 0.8125)] + [0.5] * 8)


def test_cosine_annealing_lr():
    got = lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.1))
    want = [0.1 + 0.4 * (1 + math.cos(math.pi * s / 10)) / 2 for s in range(12)]
    assert got == pytest.approx(want)
    assert got[10] == pytest.approx(0.1)


def test_warmup_cosine_is_pretrains_schedule():
    got = lrs(lambda o: lr_scheduler.WarmupCosineLR(o, warmup_iters=3, decay_iters=9,
                                                   min_lr=0.05), n=14)
    assert got == [cosine_lr(s, 0.5, 3, 9, 0.05) for s in range(14)]


def test_groups_keep_their_own_base_lr_and_state_round_trips():
    p, q = nn.Parameter([1.0]), nn.Parameter([2.0])
    opt = SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.1}])
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    sched.step()
    assert sched.get_last_lr() == [0.25, 0.025]
    state = sched.state_dict()
    opt2 = SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.1}])
    sched2 = lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [0.25, 0.025]
    sched2.step()
    assert sched2.get_last_lr() == [0.125, 0.0125]


def test_bad_settings_are_one_sentence():
    opt = SGD([nn.Parameter([1.0])], lr=0.1)
    with pytest.raises(ConfigError):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ConfigError):
        lr_scheduler.WarmupCosineLR(opt, warmup_iters=5, decay_iters=2)
    with pytest.raises(ConfigError):
        lr_scheduler.LambdaLR(opt, [lambda s: 1, lambda s: 2])
