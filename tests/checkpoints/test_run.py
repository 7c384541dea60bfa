"""minillm checkpoints: bit-identical round trip, atomic writes that survive a kill, clear errors."""

import numpy as np
import pytest
from dying_writer import run_dying

import minillm as M
from minillm.checkpoints import run as ckpt
from minillm.errors import CheckpointError
from minillm.models import GPT, GPTConfig
from minillm.optim import AdamW

CFG = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)


def make(seed=0):
    M.manual_seed(seed)
    return GPT(GPTConfig(**CFG)).eval()


def test_save_load_bit_identical(tmp_path):
    m = make()
    idx = np.arange(16).reshape(2, 8) % 13
    M.save(m, tmp_path / "ck")
    m2, tok = M.load(tmp_path / "ck")
    assert tok is None  # saved without one
    np.testing.assert_array_equal(m(idx)[0].numpy(), m2(idx)[0].numpy())
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["checksums.json", "config.json", "model.safetensors"]


def test_optimizer_state_round_trip(tmp_path):
    m = make()
    opt = AdamW(m.parameters(), lr=1e-2)
    idx = np.arange(16).reshape(2, 8) % 13
    m.train()
    for _ in range(2):
        _, loss = m(idx, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt.save(tmp_path / "ck", m, optimizer=opt, state={"step": 2})
    m2 = make(seed=1)
    ckpt.load_into(m2, tmp_path / "ck")
    opt2 = AdamW(m2.parameters(), lr=1e-2)
    state = ckpt.load_training_state(tmp_path / "ck", opt2)
    assert state["step"] == 2 and opt2.step_count == 2
    for p, q in zip(opt.param_groups[0]["params"], opt2.param_groups[0]["params"]):
        np.testing.assert_array_equal(opt.state[id(p)]["v"], opt2.state[id(q)]["v"])


def test_write_killed_half_way_leaves_old_checkpoint(tmp_path):
    m = make()
    M.save(m, tmp_path / "ck")
    idx = np.arange(8).reshape(1, 8)
    want = m(idx)[0].numpy()
    # a second process starts overwriting the checkpoint with other weights and dies (os._exit,
    # like SIGKILL: no cleanup) after writing the first file
    code = f"""
        import minillm as M
        from minillm.models import GPT, GPTConfig
        M.manual_seed(5)
        M.save(GPT(GPTConfig(**{CFG!r})), {str(tmp_path / "ck")!r})
    """
    assert run_dying(code) == 9
    np.testing.assert_array_equal(M.load(tmp_path / "ck")[0](idx)[0].numpy(), want)


def test_crash_between_renames_is_recovered(tmp_path):
    m = make()
    M.save(m, tmp_path / "ck")
    (tmp_path / "ck").rename(tmp_path / ".ck.old-deadbeef")  # as if killed right after the 1st rename
    M.load(tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").exists()


def test_truncated_or_corrupt_files_give_clear_errors(tmp_path):
    M.save(make(), tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        M.load(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        M.load(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        M.load(tmp_path / "missing")


def test_shape_mismatch_is_a_clear_error(tmp_path):
    M.save(make(), tmp_path / "ck")
    other = GPT(GPTConfig(**{**CFG, "n_embd": 32}))
    with pytest.raises(CheckpointError, match="does not match this model.*shape"):
        ckpt.load_into(other, tmp_path / "ck")


def test_never_pickle(tmp_path):
    M.save(make(), tmp_path / "ck")
    for p in (tmp_path / "ck").iterdir():
        assert not p.read_bytes().startswith(b"\x80")  # pickle protocol marker
