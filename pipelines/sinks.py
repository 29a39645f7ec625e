"""Driver-side sink: splits pipeline rows into dataset records and rejects, writes Parquet parts.

Rows arrive as numpy batches from `Dataset.iter_batches`. Records stream into one open part per split (and one
rejects part), a row group at a time (`ParquetPart`: temp file, renamed at commit), so the driver holds one row
group of images, not a shard; every `rows_per_shard` rows the parts are committed, with the stage counts of
exactly those rows, in the manifest.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.core.contract import DATASET_SCHEMA, REJECT_SCHEMA, ParquetPart, caption_record, dataset_row
from pipelines.core.faults import fault_point
from pipelines.manifest import Manifest
from pipelines.core.rows import batch_to_rows, reject, reject_records
from pipelines.resume_index import DoneIndex



class Stats(Protocol):
    """A mergeable accumulator over final rows, stored in the manifest (`filters.stats.FilterStats`)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Stats: ...
    def merge(self, other: Stats) -> Stats: ...
    def add_row(self, row: Mapping[str, Any]) -> None: ...
    def as_dict(self) -> dict[str, Any]: ...


class NoStats:
    """The accumulator of a sink that keeps no statistics."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NoStats:
        return cls()

    def merge(self, other: Stats) -> NoStats:
        return self

    def add_row(self, row: Mapping[str, Any]) -> None:
        return None

    def as_dict(self) -> dict[str, Any]:
        return {}


class DatasetSink:
    """Consumes pipeline batches; owns dedup, part writing, and manifest commits."""

    def __init__(
        self,
        out: Path,
        manifest: Manifest,
        *,
        domain: str,
        rows_per_shard: int,
        seen_ids: Iterable[str] = (),
        record_fn: Callable[[Mapping[str, Any]], dict[str, Any]] = caption_record,
        stats: type[Stats] | None = None,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        done_index: DoneIndex | None = None,
    ):
        self.out = out
        self.manifest = manifest
        self.domain = domain
        self.rows_per_shard = rows_per_shard
        self.record_fn = record_fn
        self.stats_cls = stats or NoStats
        self.on_row = on_row
        # Ids written so far live on disk (bounded memory at millions of rows), not in a Python set.
        self.own_index = done_index is None
        self.seen = done_index if done_index is not None else DoneIndex(out)
        self.seen.add_ids(seen_ids)
        self.run_tag = uuid.uuid4().hex[:8]
        self.seq = len(manifest.data["parts"]["data"]) + len(manifest.data["parts"]["rejects"])
        self._reset_pending()
        self.totals = Counter()
        # This run's timing (pipelines/timing.py turns it into per-stage figures): busy seconds and
        # [first start, last end] per stage, and when the first row reached the sink.
        self.run_busy: Counter = Counter()
        self.spans: dict[str, list[float]] = {}
        self.first_row_at: float | None = None

    def _reset_pending(self) -> None:
        self.pending_parts: dict[str, ParquetPart] = {}  # split -> its open data part; "" -> the rejects part
        self.pending_counts: dict[str, Counter] = {}
        self.pending_reasons: Counter = Counter()
        self.pending_tokens = Counter()
        self.pending_stats = self.stats_cls()
        self.n_pending = 0

    # -- rows ------------------------------------------------------------------------------------

    def add_batch(self, batch: Mapping[str, np.ndarray]) -> None:
        for row in batch_to_rows(batch):
            self.add_row(row)
            if self.n_pending >= self.rows_per_shard:
                self.flush()

    def add_row(self, row: dict[str, Any]) -> None:
        if not row.get("reject_stage"):
            dup = not self.seen.add_id(row["id"])
            if dup:
                reject(row, "dedup", "duplicate_id", f"id {row['id']} already written from an earlier row")
            self._count("dedup", 1, 0 if dup else 1, 1 if dup else 0)
        for stage, c in json.loads(row.get("counts") or "{}").items():
            self._count(stage, c["in"], c["out"], c["rejected"])
        for stage, seconds in json.loads(row.get("busy") or "{}").items():
            self.pending_counts.setdefault(stage, Counter())["busy_s"] += seconds
            self.run_busy[stage] += seconds
        for stage, (start, end) in json.loads(row.get("spans") or "{}").items():
            lo, hi = self.spans.get(stage, (start, end))
            self.spans[stage] = [min(lo, start), max(hi, end)]
        if self.first_row_at is None:
            self.first_row_at = time.time()
        for rec in reject_records(row):
            self._part("").add(rec)
            self.pending_reasons[(rec["stage"], rec["reason"])] += 1
        self.pending_tokens["prompt"] += int(row.get("n_prompt_tokens") or 0)
        self.pending_tokens["output"] += int(row.get("n_output_tokens") or 0)
        self.totals["tokens_prompt"] += int(row.get("n_prompt_tokens") or 0)
        self.totals["tokens_output"] += int(row.get("n_output_tokens") or 0)
        if not row.get("reject_stage"):
            records = json.loads(row["records"]) if row.get("records") else [self.record_fn(row)]
            for rec in records:
                self._part(rec.get("split", "train")).add(self._dataset_row(row, rec))
        self.pending_stats.add_row(row)
        self.n_pending += 1
        self.totals["rows"] += 1
        if self.on_row:
            self.on_row(row)

    def _count(self, stage: str, n_in: int, n_out: int, n_rej: int) -> None:
        c = self.pending_counts.setdefault(stage, Counter())
        c["in"] += n_in
        c["out"] += n_out
        c["rejected"] += n_rej

    def _dataset_row(self, row: Mapping[str, Any], rec: Mapping[str, Any]) -> dict[str, Any]:
        images = rec.get("images")
        return dataset_row(
            id=row["id"], source_id=row.get("source_id", ""), images=[row["image"]] if images is None else images,
            messages=rec["messages"], task_kind=rec.get("task_kind", "caption"), split=rec.get("split", "train"),
            n_synthetic=rec.get("n_synthetic", 0), judge_scores=rec.get("judge_scores", []), domain=self.domain,
        )

    def add_extra_records(self, records: list[dict[str, Any]], id_prefix: str) -> None:
        """Records that come from outside the pipeline (general data mixed in)."""
        for i, rec in enumerate(records):
            row = {"id": f"{id_prefix}-{i}", "source_id": rec.get("source_id", id_prefix), "image": b""}
            self._part(rec.get("split", "train")).add(self._dataset_row(row, rec))
        self.flush()

    # -- commit ----------------------------------------------------------------------------------

    def _part(self, split: str) -> ParquetPart:
        """The open part of `split` ("" = rejects) for the current shard, opened on its first row."""
        part = self.pending_parts.get(split)
        if part is None:
            name = f"rejects/rejects-{self.seq:05d}" if split == "" else f"data/{split}-{self.seq:05d}"
            part = self.pending_parts[split] = ParquetPart(self.out / f"{name}-{self.run_tag}.parquet",
                                                           REJECT_SCHEMA if split == "" else DATASET_SCHEMA)
        return part

    def flush(self) -> None:
        if not self.n_pending and not self.pending_parts:
            return
        new: dict[str, list[Path]] = {"data": [], "rejects": []}
        for split, part in sorted(self.pending_parts.items()):
            new["rejects" if split == "" else "data"].append(part.commit())
            if split:
                self.totals[f"records_{split}"] += part.n_rows
        self.seq += 1
        fault_point("sink.before_commit")
        self.manifest.add_counts({s: dict(c) for s, c in self.pending_counts.items()})
        self.manifest.add_reject_reasons(dict(self.pending_reasons))
        tokens = self.manifest.data["tokens"]
        for k, v in self.pending_tokens.items():
            tokens[k] = tokens.get(k, 0) + v
        total = self.stats_cls.from_dict(self.manifest.data.get("filter_stats")).merge(self.pending_stats)
        self.manifest.data["filter_stats"] = total.as_dict()
        self.manifest.commit(new)
        self.seen.sync()
        self._reset_pending()
        fault_point("sink.after_commit")

    def close(self) -> None:
        self.flush()
        if self.own_index:
            self.seen.close()

    def abort(self) -> None:
        """Drop the open parts (their temp files) without committing: the run failed."""
        for part in self.pending_parts.values():
            part.discard()
        self.pending_parts = {}
