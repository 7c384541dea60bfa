"""The GPT model: loss at initialisation, whole-model gradient check, overfitting one batch,
dropout modes, KV cache, and reference vs Numba kernels."""

import numpy as np
import pytest

import minillm as M
from minillm.kernels import registry
from minillm.models import GPT, GPTConfig
from minillm.optim import AdamW
from minillm.testing import gradcheck


def tiny(dropout=0.0, bias=True, seed=0, **kw):
    M.manual_seed(seed)
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=dropout, bias=bias)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def test_initial_loss_is_log_vocab():
    M.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32))
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 65, (8, 32)), rng.integers(0, 65, (8, 32))
    _, loss = m(idx, tgt)
    assert abs(loss.item() - np.log(65)) < 0.1


def test_gpt2_init_scales_residual_projections():
    M.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=8, n_head=4, n_embd=64))
    assert abs(m.h[0].attn.c_proj.weight.numpy().std() - 0.02 / np.sqrt(16)) < 1e-3
    assert abs(m.h[0].mlp.c_fc.weight.numpy().std() - 0.02) < 1e-3
    assert m.lm_head_weight is m.wte.weight
    M.manual_seed(0)
    wide = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=8, n_head=4, n_embd=64, initializer_range=0.05))
    assert abs(wide.h[0].attn.c_proj.weight.numpy().std() - 0.05 / np.sqrt(16)) < 2e-3
    assert abs(wide.h[0].mlp.c_fc.weight.numpy().std() - 0.05) < 2e-3
    assert abs(wide.wte.weight.numpy().std() - 0.05) < 2e-3
    with pytest.raises(M.MinillmError, match="initializer_range must be positive"):
        GPTConfig(initializer_range=0.0)


@pytest.mark.parametrize("bias", [True, False])
def test_whole_gpt_gradcheck(reference_kernels, bias):
    m = tiny(bias=bias).to(dtype=np.float64)
    rng = np.random.default_rng(1)
    idx, tgt = rng.integers(0, 11, (2, 7)), rng.integers(0, 11, (2, 7))
    params = dict(m.named_parameters())
    # gradcheck over a sample of parameters: each is fed through as an input of the loss
    names = ["wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_fc.weight", "ln_f.weight"]
    if bias:
        names += ["h.0.mlp.c_fc.bias", "h.1.ln_2.bias"]
    chosen = [params[n] for n in names]

    def loss_fn(*ps):
        return m(idx, tgt)[1]

    assert gradcheck(loss_fn, *chosen, max_checks=30) <= 1e-6


def test_untied_head_has_its_own_matrix_and_gradcheck(reference_kernels):
    tied, untied = tiny(seed=4), tiny(seed=4, tie_word_embeddings=False)
    # the tied model's initial weights are unchanged by the option; the untied one adds lm_head
    assert "lm_head.weight" not in dict(tied.named_parameters())
    assert untied.lm_head_weight is untied.lm_head.weight is not untied.wte.weight
    assert untied.lm_head.weight.shape == (11, 16)
    assert untied.num_parameters() == tied.num_parameters() + 11 * 16
    # non-embedding count: the untied token table is a lookup only and is left out, the head
    # matrix counted in its place, so both models do the same matmul work per token
    assert untied.num_parameters(non_embedding=True) == tied.num_parameters(non_embedding=True)
    assert untied.num_parameters(non_embedding=True) == untied.num_parameters() - 11 * 16 - 8 * 16
    m = untied.to(dtype=np.float64)
    rng = np.random.default_rng(2)
    idx, tgt = rng.integers(0, 11, (2, 7)), rng.integers(0, 11, (2, 7))
    logits, loss = m(idx, tgt)
    hidden = m(idx, return_hidden=True)
    np.testing.assert_allclose(logits.numpy(), hidden.numpy() @ m.lm_head.weight.numpy().T, rtol=1e-12)
    loss.backward()
    wte_grad = m.wte.weight.grad
    rows_used = np.zeros(11, bool)
    rows_used[idx.ravel()] = True
    assert not wte_grad[~rows_used].any()  # wte only gets gradient through the lookup
    assert m.lm_head.weight.grad[~rows_used].any()  # the head gets it for every row
    params = dict(m.named_parameters())
    chosen = [params[n] for n in ("lm_head.weight", "wte.weight", "h.1.attn.c_proj.weight")]
    assert gradcheck(lambda *ps: m(idx, tgt)[1], *chosen, max_checks=30) <= 1e-6


def test_overfits_one_batch():
    m = tiny(n_embd=32, block_size=16)
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 11, (4, 16)), rng.integers(0, 11, (4, 16))
    opt = AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        _, loss = m(idx, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_dropout_train_vs_eval():
    m = tiny(dropout=0.3)
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    m.train()
    assert not np.array_equal(m(idx)[0].numpy(), m(idx)[0].numpy())
    m.eval()
    np.testing.assert_array_equal(m(idx)[0].numpy(), m(idx)[0].numpy())


def test_kv_cache_matches_full_forward():
    m = tiny().eval()
    idx = np.random.default_rng(0).integers(0, 11, (3, 8))
    full, _ = m(idx)
    cache = m.new_kv_cache(3)
    with M.no_grad():
        first, _ = m(idx[:, :5], kv_cache=cache)
        steps = [m(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, 8)]
    got = np.concatenate([first.numpy()] + [s.numpy() for s in steps], axis=1)
    np.testing.assert_allclose(got, full.numpy(), rtol=1e-4, atol=1e-5)


def test_flops_per_token_formula():
    m = tiny()
    c = m.config
    assert m.flops_per_token(8) == 6 * m.num_parameters(non_embedding=True) + 12 * c.n_layer * c.n_embd * 8


@pytest.mark.skipif(not registry.numba_available(), reason="numba not installed")
def test_numba_and_reference_kernels_agree_on_loss_and_grads():
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    results = {}
    prev = M.get_kernels()
    for mode in ("reference", "numba"):
        M.set_kernels(mode)
        m = tiny()
        _, loss = m(idx, tgt)
        loss.backward()
        results[mode] = (loss.item(), {n: p.grad.copy() for n, p in m.named_parameters()})
    M.set_kernels(prev)
    (l_ref, g_ref), (l_nb, g_nb) = results["reference"], results["numba"]
    assert abs(l_ref - l_nb) < 1e-5
    for n in g_ref:
        np.testing.assert_allclose(g_nb[n], g_ref[n], rtol=1e-3, atol=1e-5, err_msg=n)
