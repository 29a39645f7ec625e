"""Fault injection for reliability tests. Inert unless VLM_ADAPT_FAULT is set.

VLM_ADAPT_FAULT="<point>:<n>" SIGKILLs the current process the n-th time it reaches `<point>`
(counted per process). With VLM_ADAPT_FAULT_ONCE=<path>, the kill happens only once across
processes (the marker file is created just before the kill), so a restarted Ray actor survives.
Points: "sink.before_commit", "sink.after_commit", "stage.<name>" (a stage got a batch).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("VLM_ADAPT_FAULT")
    if not spec or not spec.startswith(name + ":"):
        return
    _hits[name] += 1
    if _hits[name] < int(spec.rsplit(":", 1)[1]):
        return
    once = os.environ.get("VLM_ADAPT_FAULT_ONCE")
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
