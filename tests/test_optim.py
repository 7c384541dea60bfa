"""Optimizers and schedules against hand-computed references."""

import math

import numpy as np
import pytest

import minillm as M
from minillm import nn
from minillm.optim import SGD, AdamW, clip_grad_norm_, cosine_lr, gpt_param_groups


def adamw_by_hand(p, grads, lr, b1, b2, eps, wd):
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * wd * p - lr * mhat / (math.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("mode", ["reference", "auto"])
def test_adamw_matches_hand_computation(mode):
    prev = M.get_kernels()
    M.set_kernels(mode)
    try:
        p0 = np.array([0.5, -1.5, 2.0], dtype=np.float64)
        grads = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.5, 0.0]), np.array([1.0, 1.0, -2.0])]
        w = nn.Parameter(p0.copy())
        opt = AdamW([w], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        for g in grads:
            w.grad = g.copy()
            opt.step()
        want = [adamw_by_hand(p0[i], [g[i] for g in grads], 0.1, 0.9, 0.95, 1e-8, 0.1) for i in range(3)]
        np.testing.assert_allclose(w.data, want, rtol=1e-10 if mode == "reference" else 1e-6)
    finally:
        M.set_kernels(prev)


def test_sgd_momentum_by_hand():
    w = nn.Parameter(np.array([1.0]))
    opt = SGD([w], lr=0.1, momentum=0.9)
    for g in (1.0, 2.0):
        w.grad = np.array([g])
        opt.step()
    # b1 = 1; w = 1 - 0.1 = 0.9; b2 = 0.9 + 2 = 2.9; w = 0.9 - 0.29 = 0.61
    np.testing.assert_allclose(w.data, [0.61])


def test_param_groups_exclude_biases_and_norms():
    from minillm.models import GPT, GPTConfig

    m = GPT(GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=1, n_embd=8))
    decay, no_decay = gpt_param_groups(m, 0.1)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(m.parameters())
    # a bias in the no-decay group is untouched by weight decay when its grad is zero
    opt = AdamW([decay, no_decay], lr=1.0, weight_decay=0.5)
    for p in m.parameters():
        p.grad = np.zeros_like(p.data)
    before = m.ln_f.weight.numpy().copy()
    w_before = m.h[0].mlp.c_fc.weight.numpy().copy()
    opt.step()
    np.testing.assert_array_equal(m.ln_f.weight.numpy(), before)
    # the group setting (0.1) overrides the optimizer default (0.5): p *= 1 - lr * 0.1
    np.testing.assert_allclose(m.h[0].mlp.c_fc.weight.numpy(), w_before * 0.9, rtol=1e-6)


def test_clip_grad_norm():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    norm = clip_grad_norm_([a, b], 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0.0, 0.8], rtol=1e-5)
    assert clip_grad_norm_([a, b], 10.0) == pytest.approx(1.0, rel=1e-5)


def test_cosine_schedule_by_hand():
    kw = dict(lr=1e-3, warmup_iters=10, decay_iters=110, min_lr=1e-4)
    assert cosine_lr(0, **kw) == pytest.approx(1e-3 * 1 / 11)
    assert cosine_lr(9, **kw) == pytest.approx(1e-3 * 10 / 11)
    assert cosine_lr(10, **kw) == pytest.approx(1e-3)
    assert cosine_lr(60, **kw) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert cosine_lr(110, **kw) == pytest.approx(1e-4)
    assert cosine_lr(500, **kw) == 1e-4
    lrs = [cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))
