"""The output contract, written once: dataset rows and their features, reject rows, and chat messages.

Everything that writes or reads the dataset uses these: the sink, `filters.mix`, `posttrain` (data loading,
synthesizer tuning) and the fixtures. A dataset row is one training conversation::

    id, source_id, images (list of {bytes, path}), messages (TRL chat format), task_kind, split,
    n_synthetic, judge_scores, domain

`split` is ``train`` for single-stage data and ``stage1`` / ``stage2`` for a two-stage export; the trainer
orders by it, so it is a column (not only a part-file name).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

from pipelines.core.rows import REJECT_COLUMNS

SPLITS = ("train", "stage1", "stage2")
# User turn of the caption task when the source gave none.
DEFAULT_CAPTION_PROMPT = "Describe the image."
_IMAGE_TAG = re.compile(r"\s*<image>\s*")

DATASET_FEATURES = Features(
    {
        "id": Value("string"),
        "source_id": Value("string"),
        "images": List(Image()),
        "messages": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
        "task_kind": Value("string"),
        "split": Value("string"),
        "n_synthetic": Value("int32"),
        "judge_scores": List(Value("float32")),
        "domain": Value("string"),
    }
)
DATASET_SCHEMA = DATASET_FEATURES.arrow_schema
REJECT_SCHEMA = pa.schema([pa.field(c, pa.float64() if c == "score" else pa.string()) for c in REJECT_COLUMNS])


def messages(turns: Sequence[tuple[str, str]], n_images: int = 1) -> list[dict[str, Any]]:
    """(user, assistant) text pairs -> chat messages; `n_images` image parts lead the first user turn."""
    out: list[dict[str, Any]] = []
    for i, (user, assistant) in enumerate(turns):
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)] if i == 0 else []
        content.append({"type": "text", "text": user})
        out.append({"role": "user", "content": content})
        out.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    return out


def make_record(turns: Sequence[tuple[str, str]], task_kind: str, *, n_synthetic: int, judge_scores: Sequence[Any],
                split: str = "train") -> dict[str, Any]:
    """One output record of a pipeline row (the `records` column): a conversation and its metadata."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return {"split": split, "messages": messages(turns), "task_kind": task_kind, "n_synthetic": n_synthetic,
            "judge_scores": list(judge_scores)}


def strip_image_tags(text: str) -> str:
    """Text with `<image>` placeholders removed (messages carry images as parts, never as tags)."""
    return _IMAGE_TAG.sub(" ", text).strip()


def caption_turn(row: Mapping[str, Any]) -> tuple[str, str]:
    """The caption task of a pipeline row: (user prompt or the default, caption)."""
    prompt = strip_image_tags(row.get("user_prompt") or "")
    return (prompt or DEFAULT_CAPTION_PROMPT, row["caption"])


def caption_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The record of an image with its caption task only (also the sink's record when mix did not run)."""
    return make_record([caption_turn(row)], "caption", n_synthetic=0, judge_scores=[])


def png_bytes(image: Any) -> bytes:
    """A PIL image as PNG bytes (bytes pass through)."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def dataset_row(*, id: str, images: Sequence[Any], messages: list[dict[str, Any]], task_kind: str = "caption",
                split: str = "train", source_id: str = "", n_synthetic: int = 0,
                judge_scores: Sequence[float] = (), domain: str = "") -> dict[str, Any]:
    """A row of DATASET_SCHEMA; images are PNG bytes or PIL images."""
    return {
        "id": id,
        "source_id": source_id,
        "images": [{"bytes": png_bytes(im), "path": None} for im in images],
        "messages": [{"role": m["role"], "content": [{"type": c["type"], "text": c.get("text")} for c in m["content"]]}
                     for m in messages],
        "task_kind": task_kind,
        "split": split,
        "n_synthetic": int(n_synthetic),
        "judge_scores": [float(s) for s in judge_scores],
        "domain": domain,
    }


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Rows as one zstd Parquet file in memory (callers write it atomically)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_dataset(path: Any, examples: Sequence[Mapping[str, Any]]) -> None:
    """Write examples (`dataset_row` keyword dicts: id, images, messages, ...) as a dataset part, for tests,
    benchmarks and fixtures; the pipeline's sink writes the same schema."""
    rows = [dataset_row(**{k: v for k, v in e.items()}) for e in examples]
    with open(path, "wb") as fh:
        fh.write(parquet_bytes(rows, DATASET_SCHEMA))
