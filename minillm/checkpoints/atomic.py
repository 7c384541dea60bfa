"""Atomic writes: a crash at any moment leaves the old file (or directory) or the new one.

    write_file(path, data)         one file: a temporary name beside it, fsync, rename over it
    replacing(path)                the same for a file another writer makes (GGUF, a download)
    write_dir(directory, files)    a whole directory (a checkpoint): name -> bytes
    check_replaceable(dir, names)  before write_dir replaces a directory the user named (an
                                   export's --out): refuse one holding other files
    recover_dir(directory)         after a crash between write_dir's two renames, put the old one back
    remove_stale(directory)        delete the temporary and moved-aside copies a crash left beside it

A file: the bytes go to ``.NAME.XXXX.tmp`` in the same directory, are fsynced, then renamed over
``path`` (``os.replace`` is atomic within one filesystem). A directory: everything is written
into a fresh sibling ``.DIR.tmp-TAG`` (each file fsynced), which then replaces DIR by rename; the
old DIR is first moved aside to ``.DIR.old-TAG`` and deleted only after the new one is in place.
Renaming a non-empty directory over another is not atomic, hence the two renames; a crash between
them leaves no DIR but a ``.DIR.old-TAG``, which ``recover_dir`` renames back.

This module uses only the standard library (and minillm.errors), so that every layer that
writes files (tokenizers, prepared data, checkpoints) can use it.

Crash tests: ``MINILLM_CRASH_AT=NAME:N`` (a test-only hook) ends the process with ``os._exit(CRASH_EXIT)``
the N-th time (1-based) the write point NAME is reached, as a ``kill -9`` there would. The points:

    write        inside ``_write_all``, after half of a file's bytes are written (every file of
                 write_file / write_dir, and the log lines of training runs)
    moved_aside  in write_dir, after DIR was renamed to .DIR.old-TAG, before .DIR.tmp-TAG -> DIR
    swapped      in write_dir, after .DIR.tmp-TAG -> DIR, before .DIR.old-TAG is deleted
    replace      in replacing / write_file, after the temporary file is fsynced, before the rename
    prepare_swap in minillm.data.finish_prepare, after each staged data file is renamed into place
"""

import errno
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from minillm.errors import CheckpointError

CRASH_EXIT = 86  # the exit status of a process the crash hook ended
CRASH_POINTS = ("write", "moved_aside", "swapped", "replace")  # of every atomic write
_crash_counts = {}


def crash_point(name):
    """The test-only crash hook (see the module docstring): ``os._exit`` at the N-th ``name``."""
    spec = os.environ.get("MINILLM_CRASH_AT")
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(n or 1):
        os._exit(CRASH_EXIT)


def _write_all(f, data, sync=True):
    """Write ``data`` to the open binary file ``f`` and make it durable (flush + fsync; without
    ``sync`` only flushed, for appended log lines)."""
    data = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    half = len(data) // 2
    f.write(data[:half])
    if os.environ.get("MINILLM_CRASH_AT"):
        f.flush()  # what a kill here leaves on disk: the first half
        crash_point("write")
    f.write(data[half:])
    f.flush()
    if sync:
        os.fsync(f.fileno())


def append_line(path, text):
    """Append one line to the text file ``path`` (a log): a single write of the whole line, so a
    crash leaves at most one partial last line, which readers skip."""
    try:
        with open(path, "ab") as f:
            _write_all(f, (text + "\n").encode(), sync=False)
    except OSError as e:
        _raise_with_path(e, path)
        raise


def _raise_with_path(e, path):
    """An OSError from a write (a full disk: ENOSPC, EFBIG) names no file; raise it again naming
    ``path``, so that the user is told which path failed."""
    if isinstance(e, OSError) and e.filename is None and e.errno is not None:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


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
    if not path.parent.is_dir():  # mkstemp would name a random file in its error
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("replace")
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        _raise_with_path(e, path)
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
            crash_point("moved_aside")
        os.rename(tmp, directory)
        fsync_dir(directory.parent)
        crash_point("swapped")
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not directory.exists():
            os.rename(old, directory)
        _raise_with_path(e, directory)
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


def remove_stale(directory):
    """Delete what crashed writes left beside ``directory``: every ``.DIR.tmp-*`` (a copy that
    was never renamed into place; ``recover_dir`` never needs one), and the ``.DIR.old-*`` copies
    once ``directory`` itself exists (call ``recover_dir`` first, so a moved-aside copy that is
    the only one is put back, not deleted). Only by the process that owns the directory (another
    writer may be between its two renames)."""
    directory = Path(directory)
    stale = list(directory.parent.glob(f".{directory.name}.tmp-*"))
    if directory.is_dir():
        stale += directory.parent.glob(f".{directory.name}.old-*")
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_files(folder):
    """Delete the ``.NAME.XXXX.tmp`` files a crashed ``write_file`` / ``replacing`` left in
    ``folder`` (only by the process that owns the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for stale in folder.glob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
