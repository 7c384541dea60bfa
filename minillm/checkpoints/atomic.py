"""Atomic writes: a crash at any moment leaves the old file (or directory) or the new one.

    write_file(path, data)         one file: a temporary name beside it, fsync, rename over it
    replacing(path)                the same for a file another writer makes (GGUF, a download)
    write_dir(directory, files)    a whole directory (a checkpoint): name -> bytes
    check_replaceable(dir, names)  before write_dir replaces a directory the user named (an
                                   export's --out): refuse one holding other files
    recover_dir(directory)         after a crash between write_dir's two renames, put the old one back

A file: the bytes go to ``.NAME.XXXX.tmp`` in the same directory, are fsynced, then renamed over
``path`` (``os.replace`` is atomic within one filesystem). A directory: everything is written
into a fresh sibling ``.DIR.tmp-TAG`` (each file fsynced), which then replaces DIR by rename; the
old DIR is first moved aside to ``.DIR.old-TAG`` and deleted only after the new one is in place.
Renaming a non-empty directory over another is not atomic, hence the two renames; a crash between
them leaves no DIR but a ``.DIR.old-TAG``, which ``recover_dir`` renames back.

This module uses only the standard library (and minillm.errors), so that every layer that
writes files (tokenizers, prepared data, checkpoints) can use it.
"""

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from minillm.errors import CheckpointError


def _write_all(f, data):
    """Write ``data`` to the open binary file ``f`` and make it durable (flush + fsync)."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(path):
    """fsync a directory, so that a rename inside it survives a power loss (best effort: some
    filesystems cannot open or sync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0)  # the only portable way to read the umask is to set it and restore it
    os.umask(mask)
    return mask


@contextmanager
def replacing(path):
    """``with replacing(path) as tmp:`` write the new file at ``tmp`` (any way: a library's writer,
    a stream); on leaving the block it is fsynced and renamed over ``path``. An exception removes
    it and leaves ``path`` as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_file(path, data):
    """Write ``data`` (bytes or a memoryview) to ``path``, replacing it atomically."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        _write_all(f, data)


def write_dir(directory, files):
    """Atomically make ``directory`` hold exactly ``files`` (name -> bytes; a name may be
    ``sub/file``). Creates the parent folders."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = directory.with_name(f".{directory.name}.tmp-{tag}")
    old = directory.with_name(f".{directory.name}.old-{tag}")
    tmp.mkdir()
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp / name, "wb") as f:
                _write_all(f, data)
        fsync_dir(tmp)
        if directory.exists():
            os.rename(directory, old)
        os.rename(tmp, directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not directory.exists():
            os.rename(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(out, names):
    """Raise CheckpointError unless ``out`` is missing or a directory holding only entries in
    ``names`` (what an export writes): write_dir replaces the whole directory, and a typo in
    --out must not delete the user's files."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory; choose a new or empty --out.")
    others = sorted(p.name for p in out.iterdir() if p.name not in names)
    if others:
        raise CheckpointError(f"{out} already holds {others[0]}, which an export would delete; "
                              "choose a new or empty directory.")


def recover_dir(directory):
    """If a crash left ``directory`` missing but a moved-aside ``.DIR.old-*`` beside it, put the
    newest such copy back. Does nothing when ``directory`` exists."""
    directory = Path(directory)
    if directory.exists():
        return
    olds = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], directory)
