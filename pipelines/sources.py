"""Shard readers: image-caption inputs -> a Ray Dataset of rows that follow `pipelines.core.rows`.

Formats (`input.format`, or inferred from the path when "auto"), one reader module each under
`pipelines/readers/`:

- `json`: AdaMLLM/ShareGPT records (a JSON list, or JSONL) and an image folder. A folder input reads its
  `*.json` files (else its `*.jsonl` files) in sorted order. One work item per file, decoded a record at a
  time by a Ray task (never parsed whole on the driver): paths and captions only.
- `parquet`: a file or a folder of `*.parquet` files; the image column holds an HF Image struct
  `{bytes, path}`, raw bytes, or a path.
- `hf`: a `datasets` dataset saved with `save_to_disk` (or, with `format: hf`, a hub id).
- `webdataset`: `.tar` shards of `<key>.jpg|png|...` plus `<key>.txt` or `<key>.json` caption.

Every format streams: the driver only plans work items (a Parquet row group,
a slice of an Arrow file, a tar shard) from metadata, and Ray tasks read and normalize them. Planning
from metadata gives every row an exact `"<file>#<index>"` and makes `input.limit` deterministic.

Image root: path-based rows carry an extra column `image_root` holding the absolute folder their
`image_path` is relative to (`input.image_root`, else the input file's folder, else the input folder);
ingest resolves paths inside it. Embedded-bytes rows have `image_root == ""`.

A record that cannot be read becomes a row rejected at stage "read" (reason `malformed_record`, or
`unreadable_shard` for a tar that breaks off), never an exception and never a silent drop. An input that
cannot be read at all raises `InputError` with one line (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.readers.arrow_reader import (
    arrow_rows, check_columns, check_parquet, hf_dataset, plan_hf, plan_parquet, table_rows,
)
from pipelines.readers.common import (
    ROWS_PER_BATCH, STAGE, TAR_SUFFIXES, InputError, Malformed, image_root, is_hf_dir, list_files,
)
from pipelines.readers.json_reader import (
    check_json, json_files, json_item_rows, json_rows, parse_json_record, plan_json,
)
from pipelines.readers.webdataset_reader import IMAGE_EXTS, check_tars, plan_tars, tar_rows, webdataset_row
from pipelines.core.rows import add_busy, add_span, empty_row, rows_to_batch

__all__ = [
    "IMAGE_EXTS", "ROWS_PER_BATCH", "STAGE", "TAR_SUFFIXES", "InputError", "Malformed", "arrow_rows", "check_input",
    "detect_format", "image_root", "json_files", "json_rows", "parse_json_record", "read_source", "webdataset_row",
]

log = logging.getLogger(__name__)


def detect_format(cfg: InputConfig) -> str:
    """`input.format`, or for "auto" the format the path's name or folder contents say; raise InputError."""
    if cfg.format != "auto":
        return cfg.format
    p = Path(cfg.path or "")
    name = p.name.lower()
    if p.is_file():
        for fmt, sfx in (("json", (".json", ".jsonl")), ("parquet", (".parquet",)), ("webdataset", TAR_SUFFIXES)):
            if name.endswith(sfx):
                return fmt
        raise InputError(f"cannot tell the format of {p} from its name; set input.format (json|parquet|hf|webdataset)")
    if is_hf_dir(p):
        return "hf"
    # Top level first: a JSON input's image folder can be huge, so walk the tree only when nothing is on top.
    for recursive in (False, True):
        for fmt, sfx in (("parquet", (".parquet",)), ("webdataset", TAR_SUFFIXES)):
            if list_files(p, sfx, recursive):
                return fmt
        if not recursive and json_files(p):
            return "json"
    raise InputError(f"no .json/.jsonl, .parquet, .tar or saved datasets files in folder {p}")


def _check_path(cfg: InputConfig) -> Path:
    if not cfg.path:
        raise InputError("input.path is not set (pass --input PATH)")
    p = Path(cfg.path)
    if not p.exists() and cfg.format != "hf":
        raise InputError(f"input path {p} does not exist (for a hub dataset id set input.format=hf)")
    return p


def check_input(cfg: InputConfig) -> str:
    """Validate the input cheaply (no model loads) and return its format; raise InputError otherwise."""
    if not cfg.path:
        raise InputError("input.path is not set (pass --input PATH)")
    if cfg.image_root and not Path(cfg.image_root).is_dir():
        raise InputError(f"input.image_root {cfg.image_root} is not a folder")
    p = _check_path(cfg)
    if not p.exists():
        return "hf"  # a hub id: only loading it can tell (needs network)
    fmt = detect_format(cfg)
    if fmt == "json":
        check_json(p)
    elif fmt == "parquet":
        check_parquet(cfg, p)
    elif fmt == "hf":
        check_columns(cfg, hf_dataset(cfg).column_names, str(p))
    else:
        check_tars(p)
    return fmt


def _plan(cfg: InputConfig, fmt: str) -> list[dict[str, Any]]:
    """Work items {file, label, part (Parquet row group), start (index of its first record), count (-1: all)}.

    Counts honour input.limit in input order, so a limited read is the same prefix on every run.
    """
    p = Path(cfg.path or "")
    if fmt == "json":
        items = plan_json(p, cfg.limit)
    elif fmt == "parquet":
        items = plan_parquet(p)
    elif fmt == "hf":
        items = plan_hf(cfg)
    else:
        items = plan_tars(p, limited=cfg.limit is not None)
    if cfg.limit is not None:
        left, capped = cfg.limit, []
        for it in items:
            if left <= 0:
                break
            it["count"] = min(it["count"], left)
            left -= it["count"]
            capped.append(it)
        items = capped
    return [it for it in items if it["count"] != 0]


def _read_items(
    batch: dict[str, Any], *, cfg: InputConfig, fmt: str, root: str, done_ids: frozenset[str], done_index: str = ""
) -> Iterator[dict]:
    """Ray UDF: work items -> normalized row batches (a generator, so one item streams in pieces).

    Rows already committed are skipped by their source id, looked up for this item only in the resume
    index at `done_index` (see `pipelines.resume_index`); `done_ids` is a small explicit id set (tests).
    """
    from pipelines.resume_index import done_sources

    for i in range(len(batch["file"])):
        it = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
        if fmt == "webdataset":
            rows_iter = tar_rows(it, cfg)
        elif fmt == "json":
            rows_iter = json_item_rows(it, cfg, root)
        else:
            rows_iter = table_rows(it, cfg, fmt, root)
        skip = done_sources(done_index, it["label"])
        buf: list[dict[str, Any]] = []
        t0 = time.time()
        for row in rows_iter:
            if row["id"] not in done_ids and row["source_id"] not in skip:
                buf.append(row)
            if len(buf) >= ROWS_PER_BATCH:
                yield _stamped(buf, t0)
                buf, t0 = [], time.time()
        if buf:
            yield _stamped(buf, t0)


def _stamped(rows: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """A row batch with its read span and busy share (read time of the batch, spread over its rows)."""
    t1 = time.time()
    fresh = all(r["spans"] == "{}" and r["busy"] == "{}" for r in rows)
    span, busy = json.dumps({STAGE: [t0, t1]}), json.dumps({STAGE: (t1 - t0) / len(rows)})
    for r in rows:
        if fresh:  # the common case: one JSON string per batch instead of a parse and dump per row
            r["spans"], r["busy"] = span, busy
        else:
            add_span(r, STAGE, t0, t1)
            add_busy(r, STAGE, (t1 - t0) / len(rows))
    return rows_to_batch(rows)


def read_source(cfg: InputConfig, done_ids: frozenset[str] = frozenset(), done_index: str = ""):
    """Ray Dataset of rows for the input (every BASE_COLUMNS column, plus `image_root`).

    Skipped: rows whose id is in `done_ids` (a small explicit set, shipped to every task) and rows whose
    source id is in the resume index file `done_index` (what runs use: each task loads its own item's part).
    """
    import ray.data

    p = _check_path(cfg)
    fmt = detect_format(cfg)
    root = image_root(cfg)
    items = _plan(cfg, fmt)
    log.info("reading %s input %s as %d work items", fmt, p, len(items))
    if not items:
        return _empty()
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        # Light I/O: never starve engine actors. 0.2, not ingest's 0.25, on purpose: equal resources let Ray
        # fuse the read into the ingest actors, and one big file (one work item) would then be ingested by
        # a single actor.
        _read_items, batch_size=1, batch_format="numpy", num_cpus=0.2,
        fn_kwargs={"cfg": cfg, "fmt": fmt, "root": root, "done_ids": frozenset(done_ids), "done_index": done_index},
    )


def _empty():
    """An empty dataset that still has the row schema."""
    import ray.data

    return ray.data.from_items([empty_row(image_root="")]).limit(0)
