"""atomic.write_file: a write killed half way leaves the old file whole, and no temporary file
is left behind by a failed write."""

import pytest
from dying_writer import run_dying

from minillm.checkpoints import atomic


def test_write_file_replaces_and_keeps_usual_permissions(tmp_path):
    f = tmp_path / "a.json"
    atomic.write_file(f, b"old")
    atomic.write_file(f, memoryview(b"new bytes"))
    assert f.read_bytes() == b"new bytes"
    assert f.stat().st_mode & 0o644 == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_write_file_killed_half_way_leaves_the_old_file(tmp_path):
    f = tmp_path / "a.json"
    atomic.write_file(f, b"old contents")
    assert run_dying(f"atomic.write_file({str(f)!r}, b'new contents, longer than the old')") == 9
    assert f.read_bytes() == b"old contents"


def test_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    def failing(fh, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "_write_all", failing)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_file(tmp_path / "a.json", b"x")
    with pytest.raises(OSError, match="No space left"):
        atomic.write_dir(tmp_path / "ck", {"model.safetensors": b"x"})
    assert list(tmp_path.iterdir()) == []
