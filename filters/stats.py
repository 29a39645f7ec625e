"""Filter statistics over final pipeline rows: labels, judge scores, task types, answer lengths.

`FilterStats` is a mergeable accumulator (one per sink shard or worker, merged at the end);
`as_dict()` is what the manifest and the run report show.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from filters.judge import LABELS

# Ordered (first match wins): anchored openers before keywords found anywhere in the instruction,
# so "Describe what ..." is a description and "Is the mass on the left?" a yes-no question.
TASK_TYPE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx))
    for name, rx in (
        ("describe", r"^\W*(please\s+)?(describe|explain|summari[sz]e|caption|characteri[sz]e|write|provide|give)\b"),
        ("how many", r"\bhow\s+(many|much)\b|\bcount\b|\bnumber\s+of\b"),
        ("yes-no", r"^\W*(is|are|was|were|do|does|did|can|could|will|would|should|has|have|had)\b"),
        ("why", r"\bwhy\b"),
        ("where", r"\bwhere\b"),
        ("which", r"\bwhich\b"),
        ("what", r"\bwhat\b"),
    )
)
TASK_TYPES = (*(name for name, _ in TASK_TYPE_PATTERNS), "other")

SCORE_BINS = 10  # equal bins over [0, 1]; 1.0 falls in the last one
# Word-count bin edges: bin i holds lengths in [EDGES[i], EDGES[i+1]); the last bin is open.
LENGTH_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
ANSWER_FIELDS = ("precise", "informative", "answer")


def task_type(instruction: str) -> str:
    text = instruction.strip().lower()
    for name, rx in TASK_TYPE_PATTERNS:
        if rx.search(text):
            return name
    return "other"


def score_bin(score: float) -> int:
    return min(max(int(score * SCORE_BINS), 0), SCORE_BINS - 1)


def length_bin(n_words: int) -> int:
    i = 0
    while i + 1 < len(LENGTH_EDGES) and n_words >= LENGTH_EDGES[i + 1]:
        i += 1
    return i


def length_bin_names() -> list[str]:
    names = []
    for lo, hi in zip(LENGTH_EDGES, (*LENGTH_EDGES[1:], None), strict=True):
        names.append(f">={lo}" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"))
    return names


def _json_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return json.loads(value or "[]")
    return list(value)


class FilterStats:
    """Counts over kept tasks (`tasks`) and judged-but-rejected tasks (`task_rejects` from the judge)."""

    def __init__(self) -> None:
        self.rows = 0
        self.labels: Counter[str] = Counter()  # every judged task: kept and rejected
        self.kept_labels: Counter[str] = Counter()
        self.reject_reasons: Counter[str] = Counter()  # "stage/reason" of every task reject
        self.scores = [0] * SCORE_BINS
        self.task_types = {"kept": Counter(), "rejected": Counter()}
        self.lengths = {f: [0] * len(LENGTH_EDGES) for f in ANSWER_FIELDS}

    def add_row(self, row: dict[str, Any]) -> None:
        """Add one final pipeline row (tasks/task_rejects as JSON strings or lists)."""
        self.rows += 1
        for task in _json_list(row.get("tasks")):
            label = task.get("label") or ""
            if label:
                self.labels[label] += 1
            self.kept_labels[label or "unjudged"] += 1
            self._score(task.get("score"))
            self.task_types["kept"][task_type(task.get("instruction") or "")] += 1
            for f in ANSWER_FIELDS:
                text = task.get(f)
                if text:
                    self.lengths[f][length_bin(len(text.split()))] += 1
        for rej in _json_list(row.get("task_rejects")):
            self.reject_reasons[f"{rej.get('stage')}/{rej.get('reason')}"] += 1
            if rej.get("label"):
                self.labels[rej["label"]] += 1
                self._score(rej.get("score"))
            if rej.get("instruction"):
                self.task_types["rejected"][task_type(rej["instruction"])] += 1

    def _score(self, score: Any) -> None:
        if score is not None and not (isinstance(score, float) and score != score):  # skip None and NaN
            self.scores[score_bin(float(score))] += 1

    def merge(self, other: FilterStats) -> FilterStats:
        """Add `other` into this accumulator; returns self."""
        self.rows += other.rows
        self.labels.update(other.labels)
        self.kept_labels.update(other.kept_labels)
        self.reject_reasons.update(other.reject_reasons)
        self.scores = [a + b for a, b in zip(self.scores, other.scores, strict=True)]
        for k in self.task_types:
            self.task_types[k].update(other.task_types[k])
        for f in ANSWER_FIELDS:
            self.lengths[f] = [a + b for a, b in zip(self.lengths[f], other.lengths[f], strict=True)]
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FilterStats:
        """Inverse of `as_dict` (a resumed run continues the committed statistics)."""
        st = cls()
        if not d:
            return st
        st.rows = d["rows"]
        st.labels.update({k: v for k, v in d["labels"].items() if v})
        st.kept_labels.update(d["kept_labels"])
        st.reject_reasons.update(d["task_reject_reasons"])
        st.scores = list(d["score_histogram"]["counts"])
        for k, c in d["task_types"].items():
            st.task_types[k].update({t: n for t, n in c.items() if n})
        for f in ANSWER_FIELDS:
            st.lengths[f] = list(d["answer_words"][f]["counts"])
        return st

    def as_dict(self) -> dict[str, Any]:
        names = length_bin_names()
        return {
            "rows": self.rows,
            "labels": {lab: self.labels.get(lab, 0) for lab in LABELS},
            "kept_labels": dict(sorted(self.kept_labels.items())),
            "task_reject_reasons": dict(sorted(self.reject_reasons.items())),
            "score_histogram": {
                "edges": [round(i / SCORE_BINS, 2) for i in range(SCORE_BINS + 1)],
                "counts": list(self.scores),
            },
            "task_types": {k: {t: c.get(t, 0) for t in TASK_TYPES} for k, c in self.task_types.items()},
            "answer_words": {
                f: {"bins": names, "counts": list(self.lengths[f])} for f in ANSWER_FIELDS
            },
        }
