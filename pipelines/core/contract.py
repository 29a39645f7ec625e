"""The output contract, written once: dataset rows and their features, reject rows, and chat messages.

Everything that writes or reads the dataset uses these: the sink, `filters.mix`, `posttrain` (data loading,
synthesizer tuning) and the fixtures. A dataset row is one training conversation::

    id, source_id, images (list of {bytes, path}), messages (TRL chat format), task_kind, split,
    n_synthetic, judge_scores, domain

`split` is ``train`` for single-stage data and ``stage1`` / ``stage2`` for a two-stage export; the trainer
orders by it, so it is a column (not only a part-file name).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

from pipelines.core.files import publish, temp_beside
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


# Row groups of image data stay small so a reader (the trainer's loader, the report's sample) touches a few images
# at a time; HF `datasets` writes image datasets in row groups of 100 rows for the same reason.
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 64 << 20


@functools.cache
def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Leaf column paths of `schema` except image bytes and paths."""
    buf = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buf)
    leaves = pq.read_metadata(pa.BufferReader(buf.getvalue())).schema
    return [leaves.column(i).path for i in range(len(leaves)) if not leaves.column(i).path.startswith("images.")]


def _row_bytes(row: Mapping[str, Any]) -> int:
    return sum(len(im.get("bytes") or b"") for im in row.get("images") or ()) + 512


class ParquetPart:
    """One zstd Parquet part written while rows arrive: a row group goes to a temp file beside `path` every
    ROW_GROUP_ROWS rows or ROW_GROUP_BYTES of images, so memory holds one row group, never the part; `commit()`
    fsyncs and renames it to `path` (a crash leaves only a dot-named temp file, which the manifest's orphan
    sweep removes); `discard()` deletes it. Images are never dictionary-encoded (every value is unique)."""

    def __init__(self, path: Any, schema: pa.Schema):
        self.path = Path(path)
        self.tmp = temp_beside(self.path)
        self.schema = schema
        self.writer = pq.ParquetWriter(str(self.tmp), schema, compression="zstd", use_dictionary=_dictionary_columns(schema))
        self.rows: list[dict[str, Any]] = []
        self.bytes = 0
        self.n_rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.bytes += _row_bytes(row)
        self.n_rows += 1
        if len(self.rows) >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self._write_group()

    def _write_group(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
        self.rows, self.bytes = [], 0

    def commit(self) -> Path:
        self._write_group()
        self.writer.close()
        return publish(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def write_rows(path: Any, rows: Sequence[dict[str, Any]], schema: pa.Schema) -> Path:
    """Rows as one Parquet part at `path` (atomically, in bounded row groups)."""
    part = ParquetPart(path, schema)
    try:
        for row in rows:
            part.add(row)
        return part.commit()
    except BaseException:
        part.discard()
        raise


def write_dataset(path: Any, examples: Sequence[Mapping[str, Any]]) -> None:
    """Write examples (`dataset_row` keyword dicts: id, images, messages, ...) as a dataset part, for tests,
    benchmarks and fixtures; the pipeline's sink writes the same schema."""
    write_rows(path, [dataset_row(**{k: v for k, v in e.items()}) for e in examples], DATASET_SCHEMA)
