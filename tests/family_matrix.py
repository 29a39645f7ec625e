"""Cells of the family x capability matrix, recorded by the family tests as they run.

`cell(family, capability)` records `pass`, or `fail` with the error, into the JSON file
`$VLM_ADAPT_FAMILY_MATRIX` (default `out/family_matrix.json` in the repository); a test that checks an explicit
refusal sets `rec["status"] = "refused"` and `rec["detail"]` to the library's message. Cells of other runs are
kept, so targeted runs update their cells only. `python -m pipelines.family_table` renders docs/families.md.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def matrix_path() -> Path:
    return Path(os.environ.get("VLM_ADAPT_FAMILY_MATRIX", ROOT / "out" / "family_matrix.json"))


def _write(family: str, capability: str, rec: dict[str, str]) -> None:
    path = matrix_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {"cells": {}}
        data["cells"].setdefault(family, {})[capability] = rec
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)


@contextlib.contextmanager
def cell(family: str, capability: str, test: str = "") -> Iterator[dict[str, str]]:
    rec = {"status": "pass", "detail": "", "test": test,
           "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ")}
    try:
        yield rec
    except BaseException as e:
        rec.update(status="fail", detail=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        _write(family, capability, rec)
        raise
    _write(family, capability, rec)
