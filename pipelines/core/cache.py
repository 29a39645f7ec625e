"""The local cache of built models (offline fixtures, experiment models): where it lives and how builders lock it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """``$VLM_ADAPT_CACHE`` or ``~/.cache/vlm-adapt``."""
    env = os.environ.get("VLM_ADAPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlm-adapt"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on PATH (created if missing), so racing builders build once."""
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
