"""Row contract shared by every stage: columns, reject marking, per-stage counters.

Inside the Ray pipeline a row is flat: strings, bytes and ints only. Nested per-row data
(tasks, task rejects, counters, messages) travels as JSON strings, so blocks never disagree
on Arrow nested types (an empty list has no element type). Sinks decode and write typed Parquet.

Stages mark rows, they never drop them: a failed row gets `reject_stage`/`reject_reason` set and
later stages pass it through untouched. Each stage also adds `{"in","out","rejected"}` for itself to
the row's `counts`, so the manifest's `in == out + rejected` holds by construction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Columns every row carries from the source on. Default value given for each.
BASE_COLUMNS: dict[str, Any] = {
    "id": "",  # stable string id; content hash when the source has none
    "source_id": "",  # where the row came from: "<file>#<index>" or "<shard>#<key>"
    "image": b"",  # image bytes: raw from the source, normalized RGB PNG/JPEG after ingest
    "image_path": "",  # image path as written in the source ("" when bytes are embedded)
    "image_root": "",  # absolute folder image_path is relative to ("" when bytes are embedded)
    "caption": "",  # ground-truth caption (assistant turn of the caption task)
    "user_prompt": "",  # user turn of the caption task, "<image>" tag removed
    "reject_stage": "",  # "" while the row is accepted
    "reject_reason": "",  # short machine-readable reason, e.g. "missing_image"
    "reject_detail": "",  # human-readable detail
    "counts": "{}",  # JSON {stage: {"in": n, "out": n, "rejected": n}}
    "busy": "{}",  # JSON {stage: seconds}: this row's share of each stage's processing time
    "spans": "{}",  # JSON {stage: [start, end]}: epoch seconds of the batch that processed this row (wall per stage)
    "tasks": "[]",  # JSON list of synthetic task dicts (see TASK_KEYS)
    "task_rejects": "[]",  # JSON list of rejected synthetic text (see REJECT_COLUMNS)
}

# Keys of one synthetic task as it moves through synth -> judge -> compose.
TASK_KEYS = ("instruction", "precise", "informative", "label", "score", "answer", "answer_form")

# Columns of a rejects/*.parquet row. Row-level rejects fill the first group, task-level ones the rest.
REJECT_COLUMNS = (
    "id",
    "source_id",
    "stage",
    "reason",
    "detail",
    "image_path",
    "caption",
    "instruction",
    "precise",
    "informative",
    "label",
    "score",
    "text",
)


def content_id(*parts: bytes | str) -> str:
    """Stable id from content: first 16 hex chars of sha256 over the parts."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()[:16]


def empty_row(**values: Any) -> dict[str, Any]:
    """A row with every base column at its default, overridden by `values`."""
    row = dict(BASE_COLUMNS)
    row.update(values)
    return row


def rows_to_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Column-major numpy batch (object dtype keeps bytes and str intact)."""
    if not rows:
        return {k: np.array([], dtype=object) for k in BASE_COLUMNS}
    keys = list(rows[0])
    out = {}
    for k in keys:
        col = np.empty(len(rows), dtype=object)
        col[:] = [r[k] for r in rows]
        out[k] = col
    return out


def batch_to_rows(batch: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: _py(batch[k][i]) for k in keys} for i in range(n)]


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def is_active(row: Mapping[str, Any]) -> bool:
    """True while no stage has rejected the row."""
    return not row.get("reject_stage")


def reject(row: dict[str, Any], stage: str, reason: str, detail: str = "") -> dict[str, Any]:
    row["reject_stage"] = stage
    row["reject_reason"] = reason
    row["reject_detail"] = detail[:2000]
    return row


def add_count(row: dict[str, Any], stage: str, *, n_in: int, n_out: int, n_rejected: int) -> None:
    """Add this stage's tally to the row. Raises if in != out + rejected (a lost item is a bug)."""
    if n_in != n_out + n_rejected:
        raise AssertionError(f"stage {stage}: in={n_in} != out={n_out} + rejected={n_rejected}")
    counts = json.loads(row.get("counts") or "{}")
    c = counts.setdefault(stage, {"in": 0, "out": 0, "rejected": 0})
    c["in"] += n_in
    c["out"] += n_out
    c["rejected"] += n_rejected
    row["counts"] = json.dumps(counts, sort_keys=True)


def add_busy(row: dict[str, Any], stage: str, seconds: float) -> None:
    """Add this row's share of a stage's processing time (summed into the manifest as busy_s)."""
    busy = json.loads(row.get("busy") or "{}")
    busy[stage] = busy.get(stage, 0.0) + seconds
    row["busy"] = json.dumps(busy, sort_keys=True)


def add_span(row: dict[str, Any], stage: str, start: float, end: float) -> None:
    """Record when the batch holding this row was processed by `stage` (the sink keeps min start, max end)."""
    spans = json.loads(row.get("spans") or "{}")
    spans[stage] = [start, end]
    row["spans"] = json.dumps(spans, sort_keys=True)


def count_row_stage(row: dict[str, Any], stage: str) -> None:
    """Tally a row-level stage: one in, and one out or one rejected by this stage."""
    rejected_here = row.get("reject_stage") == stage
    add_count(row, stage, n_in=1, n_out=0 if rejected_here else 1, n_rejected=1 if rejected_here else 0)


def get_tasks(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    return json.loads(row.get("tasks") or "[]")


def set_tasks(row: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    row["tasks"] = json.dumps(tasks, ensure_ascii=False)


def add_task_rejects(row: dict[str, Any], rejects: Iterable[Mapping[str, Any]]) -> None:
    """Append task-level rejects (synthetic text dropped while the image stays)."""
    current = json.loads(row.get("task_rejects") or "[]")
    for r in rejects:
        unknown = set(r) - set(REJECT_COLUMNS)
        if unknown:
            raise KeyError(f"unknown reject fields {sorted(unknown)}")
        if not r.get("stage") or not r.get("reason"):
            raise ValueError("a task reject needs 'stage' and 'reason'")
        current.append(dict(r))
    row["task_rejects"] = json.dumps(current, ensure_ascii=False)


def reject_records(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All reject records a row contributes to rejects/: its own (if rejected) and its task rejects."""
    base = {"id": row["id"], "source_id": row.get("source_id", ""), "image_path": row.get("image_path", "")}
    out: list[dict[str, Any]] = []
    if row.get("reject_stage"):
        out.append(
            {
                **base,
                "stage": row["reject_stage"],
                "reason": row["reject_reason"],
                "detail": row.get("reject_detail", ""),
                "caption": row.get("caption", ""),
            }
        )
    for r in json.loads(row.get("task_rejects") or "[]"):
        out.append({**base, "caption": row.get("caption", ""), **r})
    return [{k: rec.get(k) for k in REJECT_COLUMNS} for rec in out]
