"""The local cache of built models (offline fixtures, experiment models): where it lives and how builders lock it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


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


def build_once(final: Path, build: Callable[[Path], dict[str, Any]], stamp_name: str) -> Path:
    """FINAL, built at most once: BUILD(tmp) fills a temp folder beside it and returns the stamp written into it
    as STAMP_NAME; the folder is renamed into place (readers see a whole folder or none), under a file lock (racing
    processes build once). A folder without its stamp was not produced by this code and is never trusted."""
    stamp = final / stamp_name
    if stamp.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if stamp.is_file():  # another process built it while we waited
            return final
        if final.exists():
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        try:
            (tmp / stamp_name).write_text(json.dumps(build(tmp), indent=1, default=str))
            tmp.chmod(0o755)  # mkdtemp makes 0700; other users and processes of a shared cache must read it
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
