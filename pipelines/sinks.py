"""Driver-side sink: splits pipeline rows into dataset records and rejects, writes Parquet parts.

Rows arrive as numpy batches from `Dataset.iter_batches`. The sink buffers up to `rows_per_shard`
dataset records, then writes one data part per split and one rejects part (temp file + rename) and
commits them, with the stage counts of exactly those rows, in the manifest.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

from filters.stats import FilterStats
from pipelines.faults import fault_point
from pipelines.manifest import Manifest, atomic_write_bytes
from pipelines.resume_index import DoneIndex
from pipelines.rows import REJECT_COLUMNS, batch_to_rows, reject, reject_records

DATASET_FEATURES = Features(
    {
        "id": Value("string"),
        "source_id": Value("string"),
        "images": List(Image()),
        "messages": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
        "task_kind": Value("string"),
        "n_synthetic": Value("int32"),
        "judge_scores": List(Value("float32")),
        "domain": Value("string"),
    }
)
DATASET_SCHEMA = DATASET_FEATURES.arrow_schema
REJECT_SCHEMA = pa.schema(
    [pa.field(c, pa.float64() if c == "score" else pa.string()) for c in REJECT_COLUMNS]
)


def default_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The caption-task record of an image, for runs where the mix stage did not run."""
    from filters.mix import caption_record

    return caption_record(row)


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


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
        record_fn: Callable[[Mapping[str, Any]], dict[str, Any]] = default_record,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        done_index: DoneIndex | None = None,
    ):
        self.out = out
        self.manifest = manifest
        self.domain = domain
        self.rows_per_shard = rows_per_shard
        self.record_fn = record_fn
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
        self.pending_records: dict[str, list[dict[str, Any]]] = {}
        self.pending_rejects: list[dict[str, Any]] = []
        self.pending_counts: dict[str, Counter] = {}
        self.pending_reasons: Counter = Counter()
        self.pending_tokens = Counter()
        self.pending_stats = FilterStats()
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
            self.pending_rejects.append(rec)
            self.pending_reasons[(rec["stage"], rec["reason"])] += 1
        self.pending_tokens["prompt"] += int(row.get("n_prompt_tokens") or 0)
        self.pending_tokens["output"] += int(row.get("n_output_tokens") or 0)
        self.totals["tokens_prompt"] += int(row.get("n_prompt_tokens") or 0)
        self.totals["tokens_output"] += int(row.get("n_output_tokens") or 0)
        if not row.get("reject_stage"):
            records = json.loads(row["records"]) if row.get("records") else [self.record_fn(row)]
            for rec in records:
                self.pending_records.setdefault(rec.get("split", "train"), []).append(self._dataset_row(row, rec))
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
        if images is None:
            images = [row["image"]]
        return {
            "id": row["id"],
            "source_id": row.get("source_id", ""),
            "images": [{"bytes": b, "path": None} for b in images],
            "messages": rec["messages"],
            "task_kind": rec.get("task_kind", "caption"),
            "n_synthetic": int(rec.get("n_synthetic", 0)),
            "judge_scores": [float(s) for s in rec.get("judge_scores", [])],
            "domain": self.domain,
        }

    def add_extra_records(self, records: list[dict[str, Any]], id_prefix: str) -> None:
        """Records that come from outside the pipeline (general data mixed in)."""
        for i, rec in enumerate(records):
            row = {"id": f"{id_prefix}-{i}", "source_id": rec.get("source_id", id_prefix), "image": b""}
            self.pending_records.setdefault(rec.get("split", "train"), []).append(self._dataset_row(row, rec))
        self.flush()

    # -- commit ----------------------------------------------------------------------------------

    def flush(self) -> None:
        if not self.n_pending and not self.pending_records:
            return
        new: dict[str, list[Path]] = {"data": [], "rejects": []}
        for split, recs in sorted(self.pending_records.items()):
            if recs:
                path = self.out / "data" / f"{split}-{self.seq:05d}-{self.run_tag}.parquet"
                write_parquet(path, recs, DATASET_SCHEMA)
                new["data"].append(path)
                self.totals[f"records_{split}"] += len(recs)
        if self.pending_rejects:
            path = self.out / "rejects" / f"rejects-{self.seq:05d}-{self.run_tag}.parquet"
            write_parquet(path, self.pending_rejects, REJECT_SCHEMA)
            new["rejects"].append(path)
        self.seq += 1
        fault_point("sink.before_commit")
        self.manifest.add_counts({s: dict(c) for s, c in self.pending_counts.items()})
        self.manifest.add_reject_reasons(dict(self.pending_reasons))
        tokens = self.manifest.data["tokens"]
        for k, v in self.pending_tokens.items():
            tokens[k] = tokens.get(k, 0) + v
        total = FilterStats.from_dict(self.manifest.data.get("filter_stats")).merge(self.pending_stats)
        self.manifest.data["filter_stats"] = total.as_dict()
        self.manifest.commit(new)
        self.seen.sync()
        self._reset_pending()
        fault_point("sink.after_commit")

    def close(self) -> None:
        self.flush()
        if self.own_index:
            self.seen.close()
