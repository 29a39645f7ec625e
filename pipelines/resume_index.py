"""What an output folder already holds, kept on disk so the driver's memory stays flat at millions of rows.

Two SQLite files under `OUT/.resume/`, rebuilt at the start of every run from the committed parts
(streamed a record batch at a time), so they can never disagree with the manifest:

- `sources.sqlite`: the `source_id` of every committed row (data and rejects). Read tasks open it
  read-only and load only the source ids of their own work item (prefix `"<label>#"`), so the done set
  is never shipped to every task. Skipping by source position is exact because a record's id is a
  pure function of the record: the same record always re-reads to the same id.
- `ids.sqlite`: the sink's duplicate check. Committed ids plus the ids written in this run; an
  `INSERT OR IGNORE` that changes nothing is a duplicate. A row whose id was committed from another
  source position therefore reaches the sink and is rejected as `duplicate_id`, as in an uninterrupted run.

Both files are on the driver's disk: read tasks must run on the same machine (Ray's local mode, or OUT on
storage every node mounts at the same path).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.manifest import Manifest

FOLDER = ".resume"
_BATCH = 65536  # rows per Parquet read batch and per executemany


def _column(paths: Iterable[Path], column: str) -> Iterator[list[str]]:
    for p in paths:
        for b in pq.ParquetFile(p).iter_batches(batch_size=_BATCH, columns=[column]):
            yield [v for v in b.column(0).to_pylist() if v is not None]


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")  # rebuilt every run: crash safety comes from the manifest
    con.execute("PRAGMA synchronous=OFF")
    return con


class DoneIndex:
    """Committed source ids (for read tasks) and an on-disk id set (for the sink's duplicate check)."""

    def __init__(self, out: Path):
        self.folder = out / FOLDER
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.sources_path = self.folder / "sources.sqlite"
        self._ids = _connect(self.folder / "ids.sqlite")
        self._ids.execute("CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self.n_sources = 0

    @classmethod
    def build(cls, manifest: Manifest) -> DoneIndex:
        """Index the committed parts of `manifest` (streamed; memory does not grow with the output)."""
        idx = cls(manifest.out)
        parts = manifest.committed_parts("data") + manifest.committed_parts("rejects")
        src = _connect(idx.sources_path)
        src.execute("CREATE TABLE done (sid TEXT PRIMARY KEY) WITHOUT ROWID")
        src.execute("BEGIN")
        for sids in _column(parts, "source_id"):
            src.executemany("INSERT OR IGNORE INTO done VALUES (?)", ((s,) for s in sids))
        src.execute("COMMIT")
        idx.n_sources = src.execute("SELECT COUNT(*) FROM done").fetchone()[0]
        src.close()
        idx.add_ids(i for ids in _column(parts, "id") for i in ids)
        return idx

    @property
    def n_ids(self) -> int:
        return self._ids.execute("SELECT COUNT(*) FROM ids").fetchone()[0]

    def add_ids(self, ids: Iterable[str]) -> None:
        self._ids.execute("BEGIN")
        self._ids.executemany("INSERT OR IGNORE INTO ids VALUES (?)", ((i,) for i in ids))
        self._ids.execute("COMMIT")

    def add_id(self, rid: str) -> bool:
        """Record `rid`; False if it was already there (a duplicate). Batched into one transaction until `sync`."""
        if not self._ids.in_transaction:
            self._ids.execute("BEGIN")
        return self._ids.execute("INSERT OR IGNORE INTO ids VALUES (?)", (rid,)).rowcount == 1

    def sync(self) -> None:
        """End the open transaction (the sink calls this at every part commit; per-row commits are slow)."""
        if self._ids.in_transaction:
            self._ids.execute("COMMIT")

    def close(self) -> None:
        self.sync()
        self._ids.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def done_sources(path: str, label: str) -> frozenset[str]:
    """Committed source ids of work-item `label` (read-task side; `path` is `DoneIndex.sources_path`)."""
    if not path:
        return frozenset()
    if not Path(path).is_file():
        raise FileNotFoundError(f"resume index {path} is not on this machine: run read tasks where OUT is mounted")
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        # '$' is the character after '#': this range is exactly the source ids starting with "<label>#".
        rows = con.execute("SELECT sid FROM done WHERE sid >= ? AND sid < ?", (f"{label}#", f"{label}$"))
        return frozenset(r[0] for r in rows)
    finally:
        con.close()
