"""Atomic file writes: a temp file beside the target, renamed over it once complete and on disk, so a reader
sees the old file or the new one, never a part; a crash leaves only a dot-named `.tmp` file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temp_beside(path: Path) -> Path:
    """A new empty temp file in `path`'s folder (created if missing), named `.<name>.<random>.tmp`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: Path) -> Path:
    """fsync the finished temp file, give it the umask's mode and rename it over `path`."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared dataset from its readers
    os.replace(tmp, path)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
