"""Parquet files and saved `datasets` datasets -> read rows, streamed by Ray tasks.

The image column holds an HF Image struct `{bytes, path}`, raw bytes, or a path. Work items are a Parquet
row group or one Arrow file of a saved dataset, planned from metadata so every row gets an exact
`"<file>#<index>"` source id. Records of a row group that cannot be decoded are rejected one by one as
`unreadable_shard`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.readers.common import ROWS_PER_BATCH, InputError, list_files, make_row, malformed_row, source_label


def check_columns(cfg: InputConfig, columns: list[str], where: str) -> None:
    """Raise InputError if the configured image/caption/id columns are not all in `columns`."""
    need = [c for c in (cfg.image_column, cfg.caption_column, cfg.id_column) if c]
    missing = [c for c in need if c not in columns]
    if missing:
        raise InputError(
            f"{where} lacks column(s) {missing} (has {columns}); set input.image_column/caption_column/id_column"
        )


def check_parquet(cfg: InputConfig, p: Path) -> None:
    """Raise InputError unless every Parquet file has the columns and a usable image column type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = list_files(p, (".parquet",))
    if not files:
        raise InputError(f"no .parquet files in {p}")
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{f} is not a readable Parquet file: {str(e).splitlines()[0]}") from None
        check_columns(cfg, schema.names, str(f))
        t = schema.field(cfg.image_column).type
        ok = pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
        ok = ok or (pa.types.is_struct(t) and any(t.field(i).name in ("bytes", "path") for i in range(t.num_fields)))
        if not ok:
            raise InputError(
                f"{f}: image column {cfg.image_column!r} has type {t}; need bytes, a path string or {{bytes, path}}"
            )


def hf_dataset(cfg: InputConfig):
    """The configured split of a saved (or, with format hf, hub) `datasets` dataset, indices flattened."""
    import datasets

    p = Path(cfg.path or "")
    try:
        ds = datasets.load_from_disk(str(p)) if p.exists() else datasets.load_dataset(cfg.path, split=cfg.split)
    except (OSError, ValueError, FileNotFoundError) as e:
        raise InputError(f"cannot load datasets dataset {cfg.path}: {str(e).splitlines()[0]}") from None
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split not in ds:
            raise InputError(f"{p} has no split {cfg.split!r} (splits: {sorted(ds)}); set input.split")
        ds = ds[cfg.split]
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    return ds


def plan_parquet(p: Path) -> list[dict[str, Any]]:
    """One work item per Parquet row group, in input order."""
    import pyarrow.parquet as pq

    items = []
    for f in list_files(p, (".parquet",)):
        meta, start = pq.ParquetFile(f).metadata, 0
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            items.append({"file": str(f), "label": source_label(f, p), "part": rg, "start": start, "count": n})
            start += n
    return items


def plan_hf(cfg: InputConfig) -> list[dict[str, Any]]:
    """One work item per Arrow cache file of the split; indices run on across files."""
    import pyarrow as pa

    items, start = [], 0
    for f in [c["filename"] for c in hf_dataset(cfg).cache_files]:
        with pa.memory_map(f) as src:
            n = sum(b.num_rows for b in pa.ipc.open_stream(src))
        items.append({"file": f, "label": cfg.split, "part": 0, "start": start, "count": n})
        start += n
    return items


def arrow_rows(
    records: list[dict[str, Any]], first_index: int, label: str, cfg: InputConfig, root: str
) -> list[dict[str, Any]]:
    """Rows from Arrow records (`Table.to_pylist()`): image as {bytes, path}, bytes or path; str caption."""
    rows = []
    for k, rec in enumerate(records):
        sid = f"{label}#{first_index + k}"
        img, caption = rec.get(cfg.image_column), rec.get(cfg.caption_column)
        own_id = rec.get(cfg.id_column) if cfg.id_column else None
        data, path = b"", ""
        if isinstance(img, dict):
            data, path = img.get("bytes") or b"", img.get("path") or ""
            path = "" if data else path
        elif isinstance(img, (bytes, bytearray)):
            data = bytes(img)
        elif isinstance(img, str):
            path = img
        if not isinstance(caption, str):
            rows.append(malformed_row(sid, _brief(rec), f"caption is {type(caption).__name__}, not a string"))
        elif not data and not path:
            rows.append(malformed_row(sid, _brief(rec), f"image column {cfg.image_column!r} holds no bytes and no path"))
        else:
            rows.append(make_row(source_id=sid, own_id=own_id, image=bytes(data), image_path=path, caption=caption,
                                 root=root))
    return rows


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without raw bytes, for hashing/reporting a malformed one."""
    return {k: (f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else v) for k, v in rec.items()}


def table_rows(it: dict[str, Any], cfg: InputConfig, fmt: str, root: str) -> Iterator[dict[str, Any]]:
    """Rows of one work item (a Parquet row group, or an Arrow file slice), read ROWS_PER_BATCH at a time.

    A row group whose pages cannot be decoded (corrupt bytes behind a readable footer) ends the item:
    each record not read yet becomes a row rejected as `unreadable_shard`, so every record the metadata
    counts is accounted for.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [c for c in (cfg.image_column, cfg.caption_column, cfg.id_column) if c]
    index, left = it["start"], it["count"]
    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(it["file"])
            batches = pf.iter_batches(batch_size=ROWS_PER_BATCH, row_groups=[it["part"]], columns=cols)
        else:
            table = pa.ipc.open_stream(pa.memory_map(it["file"])).read_all()  # zero-copy: the file is mapped
            batches = table.select(cols).to_batches(max_chunksize=ROWS_PER_BATCH)
        for b in batches:
            recs = b.slice(0, left).to_pylist()
            yield from arrow_rows(recs, index, it["label"], cfg, root)
            index, left = index + len(recs), left - len(recs)
            if left <= 0:
                return
    except (OSError, pa.ArrowException) as e:
        where = f"{it['label']} row group {it['part']}" if fmt == "parquet" else it["label"]
        detail = f"{where} cannot be decoded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        for i in range(index, index + max(left, 0)):
            yield malformed_row(f"{it['label']}#{i}", {"file": it["label"], "index": i, "error": detail}, detail,
                                reason="unreadable_shard")
