"""Shard readers: image-caption inputs -> a Ray Dataset of rows that follow `pipelines.rows`.

Formats (`input.format`, or inferred from the path when "auto"):

- `json`: AdaMLLM/ShareGPT records (a JSON list, or JSONL) and an image folder. A folder input reads its
  `*.json` files (else its `*.jsonl` files) in sorted order. Loaded on the driver: paths and captions only.
- `parquet`: a file or a folder of `*.parquet` files; the image column holds an HF Image struct
  `{bytes, path}`, raw bytes, or a path.
- `hf`: a `datasets` dataset saved with `save_to_disk` (or, with `format: hf`, a hub id).
- `webdataset`: `.tar` shards of `<key>.jpg|png|...` plus `<key>.txt` or `<key>.json` caption.

Parquet, datasets and WebDataset inputs stream: the driver only plans work items (a Parquet row group,
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
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.rows import content_id, count_row_stage, empty_row, reject, rows_to_batch

log = logging.getLogger(__name__)

STAGE = "read"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ROWS_PER_BATCH = 64  # rows per yielded block: bounds block memory when images are embedded
_PROBE_RECORDS = 100  # check_input looks at this many JSON records for one well-formed one
_USER_ROLES, _ASSISTANT_ROLES = {"user", "human"}, {"assistant", "gpt"}


class InputError(ValueError):
    """The whole input cannot be read; the message is one line saying what and where."""


class Malformed(ValueError):
    """One record cannot be read; the message is the row's reject detail."""


# -- rows ----------------------------------------------------------------------------------------


def _row(*, source_id: str, own_id: Any, image: bytes = b"", image_path: str = "", caption: str,
         user_prompt: str = "", root: str = "") -> dict[str, Any]:
    if own_id is not None and not isinstance(own_id, bool) and str(own_id) != "":
        rid = str(own_id)
    else:
        rid = content_id(image if image else image_path, user_prompt, caption)
    row = empty_row(id=rid, source_id=source_id, image=image, image_path=image_path, caption=caption,
                    user_prompt=user_prompt, image_root=root if image_path else "")
    count_row_stage(row, STAGE)
    return row


def _malformed(source_id: str, raw: Any, detail: str, reason: str = "malformed_record") -> dict[str, Any]:
    """A rejected row for an unreadable record; its id hashes the raw record so re-reads agree."""
    # ASCII dump: lone surrogates from JSON escapes must not break hashing.
    text = json.dumps(raw, sort_keys=True, default=repr)
    row = empty_row(id=content_id(reason, text), source_id=source_id, image_root="")
    reject(row, STAGE, reason, detail)
    count_row_stage(row, STAGE)
    return row


# -- paths and formats ---------------------------------------------------------------------------


def _is_hf_dir(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())


def _files(p: Path, suffixes: tuple[str, ...], recursive: bool = True) -> list[Path]:
    if p.is_file():
        return [p] if p.name.lower().endswith(suffixes) else []
    it = p.rglob("*") if recursive else p.iterdir()
    return sorted(f for f in it if f.is_file() and f.name.lower().endswith(suffixes) and not f.name.startswith((".", "_")))


def json_files(p: Path) -> list[Path]:
    """A JSON/JSONL file, or a folder's *.json files (else its *.jsonl files), sorted; not recursive."""
    if p.is_file():
        return [p]
    return _files(p, (".json",), recursive=False) or _files(p, (".jsonl",), recursive=False)


def detect_format(cfg: InputConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    p = Path(cfg.path or "")
    name = p.name.lower()
    if p.is_file():
        for fmt, sfx in (("json", (".json", ".jsonl")), ("parquet", (".parquet",)), ("webdataset", TAR_SUFFIXES)):
            if name.endswith(sfx):
                return fmt
        raise InputError(f"cannot tell the format of {p} from its name; set input.format (json|parquet|hf|webdataset)")
    if _is_hf_dir(p):
        return "hf"
    # Top level first: a JSON input's image folder can be huge, so walk the tree only when nothing is on top.
    for recursive in (False, True):
        for fmt, sfx in (("parquet", (".parquet",)), ("webdataset", TAR_SUFFIXES)):
            if _files(p, sfx, recursive):
                return fmt
        if not recursive and json_files(p):
            return "json"
    raise InputError(f"no .json/.jsonl, .parquet, .tar or saved datasets files in folder {p}")


def image_root(cfg: InputConfig) -> str:
    """Absolute folder relative image paths live in ("" for a hub dataset without input.image_root)."""
    if cfg.image_root:
        return os.path.realpath(cfg.image_root)
    p = Path(cfg.path or "")
    if not p.exists():
        return ""
    return os.path.realpath(p if p.is_dir() else p.parent)


def _label(f: Path, base: Path) -> str:
    return f.name if base.is_file() else f.relative_to(base).as_posix()


# -- check_input ---------------------------------------------------------------------------------


def check_input(cfg: InputConfig) -> str:
    """Validate the input cheaply (no model loads) and return its format; raise InputError otherwise."""
    if not cfg.path:
        raise InputError("input.path is not set (pass --input PATH)")
    p = Path(cfg.path)
    if cfg.image_root and not Path(cfg.image_root).is_dir():
        raise InputError(f"input.image_root {cfg.image_root} is not a folder")
    if not p.exists():
        if cfg.format == "hf":
            return "hf"  # a hub id: only loading it can tell (needs network)
        raise InputError(f"input path {p} does not exist (for a hub dataset id set input.format=hf)")
    fmt = detect_format(cfg)
    if fmt == "json":
        _check_json(p)
    elif fmt == "parquet":
        _check_parquet(cfg, p)
    elif fmt == "hf":
        _check_columns(cfg, _hf_dataset(cfg).column_names, str(p))
    else:
        tars = _files(p, TAR_SUFFIXES)
        if not tars:
            raise InputError(f"no .tar shards in {p}")
        for t in tars:
            if not tarfile.is_tarfile(t):
                raise InputError(f"{t} is not a tar file")
    return fmt


def _check_json(p: Path) -> None:
    files = json_files(p)
    if not files:
        raise InputError(f"no .json or .jsonl files in folder {p}")
    probe: list[tuple[str, Any]] = []
    for f in files:
        records = _load_json_file(f)
        if not records:
            raise InputError(f"{f} holds no records (empty list)")
        probe += [(f"{f.name}#{i}", r) for i, r in enumerate(records[: _PROBE_RECORDS - len(probe)])]
    errors = []
    for sid, rec in probe:
        try:
            parse_json_record(rec)
            return
        except Malformed as e:
            errors.append(f"{sid}: {e}")
    raise InputError(
        f"none of the first {len(probe)} records of {p} is an AdaMLLM/ShareGPT image-caption record ({errors[0]})"
    )


def _check_columns(cfg: InputConfig, columns: list[str], where: str) -> None:
    need = [c for c in (cfg.image_column, cfg.caption_column, cfg.id_column) if c]
    missing = [c for c in need if c not in columns]
    if missing:
        raise InputError(
            f"{where} lacks column(s) {missing} (has {columns}); set input.image_column/caption_column/id_column"
        )


def _check_parquet(cfg: InputConfig, p: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _files(p, (".parquet",))
    if not files:
        raise InputError(f"no .parquet files in {p}")
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{f} is not a readable Parquet file: {str(e).splitlines()[0]}") from None
        _check_columns(cfg, schema.names, str(f))
        t = schema.field(cfg.image_column).type
        ok = pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
        ok = ok or (pa.types.is_struct(t) and any(t.field(i).name in ("bytes", "path") for i in range(t.num_fields)))
        if not ok:
            raise InputError(
                f"{f}: image column {cfg.image_column!r} has type {t}; need bytes, a path string or {{bytes, path}}"
            )


# -- JSON ----------------------------------------------------------------------------------------


def _load_json_file(f: Path) -> list[Any]:
    """Records of a JSON list file, or of a JSONL file (an undecodable line stays as `_BadLine`)."""
    try:
        text = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {f}: {e}") from None
    if f.name.lower().endswith(".jsonl"):
        out: list[Any] = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    out.append(_BadLine(line, str(e)))
        return out
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise InputError(f"{f} must hold a JSON list of records, got {type(data).__name__}")
    return data


class _BadLine:
    def __init__(self, line: str, error: str):
        self.line, self.error = line, error


def _turns(rec: dict[str, Any]) -> tuple[str, str]:
    if "messages" in rec:
        turns, role_key, text_key = rec["messages"], "role", "content"
    elif "conversations" in rec:
        turns, role_key, text_key = rec["conversations"], "from", "value"
    else:
        raise Malformed("no 'messages' or 'conversations' list")
    if not isinstance(turns, list) or len(turns) != 2 or not all(isinstance(t, dict) for t in turns):
        raise Malformed("expected exactly two turns (user, assistant) as objects")
    roles = [t.get(role_key) for t in turns]
    if roles[0] not in _USER_ROLES or roles[1] not in _ASSISTANT_ROLES:
        raise Malformed(f"expected roles user/assistant (or human/gpt), got {roles}")
    user, caption = turns[0].get(text_key), turns[1].get(text_key)
    if not isinstance(user, str):
        raise Malformed(f"user turn {text_key!r} is {type(user).__name__}, not a string")
    if not isinstance(caption, str):
        raise Malformed(f"caption ({text_key!r} of the assistant turn) is {type(caption).__name__}, not a string")
    return user, caption


def parse_json_record(rec: Any) -> tuple[str, str, str, Any]:
    """(image_path, user_prompt, caption, own_id) of an AdaMLLM/ShareGPT record; raise Malformed otherwise."""
    if isinstance(rec, _BadLine):
        raise Malformed(f"undecodable JSON line: {rec.error}")
    if not isinstance(rec, dict):
        raise Malformed(f"record is a {type(rec).__name__}, not an object")
    images = rec.get("images", rec.get("image"))
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or len(images) != 1:
        raise Malformed("expected 'images' to be a list with exactly one image path (or 'image': path)")
    if not isinstance(images[0], str) or not images[0].strip():
        raise Malformed(f"image path is {images[0]!r}, not a non-empty string")
    user, caption = _turns(rec)
    own_id = rec.get("id")
    if own_id is not None and not isinstance(own_id, (str, int)) or isinstance(own_id, bool):
        raise Malformed(f"'id' is {type(own_id).__name__}, not a string or integer")
    for what, text in (("image path", images[0]), ("user turn", user), ("caption", caption), ("id", own_id)):
        if isinstance(text, str) and not _is_utf8(text):
            raise Malformed(f"{what} is not valid Unicode text (lone surrogate escape)")
    return images[0], user.replace("<image>", "").strip(), caption, own_id


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_rows(cfg: InputConfig, done_ids: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Rows of a JSON/JSONL input (driver side): every record once, malformed ones rejected."""
    p = Path(cfg.path or "")
    files = json_files(p)
    if not files:
        raise InputError(f"no .json or .jsonl files in folder {p}")
    root = image_root(cfg)
    rows: list[dict[str, Any]] = []
    n = 0
    for f in files:
        for i, rec in enumerate(_load_json_file(f)):
            if cfg.limit is not None and n >= cfg.limit:
                return rows
            n += 1
            sid = f"{_label(f, p)}#{i}"
            try:
                path, user, caption, own_id = parse_json_record(rec)
                row = _row(source_id=sid, own_id=own_id, image_path=path, caption=caption, user_prompt=user, root=root)
            except Malformed as e:
                row = _malformed(sid, rec.line if isinstance(rec, _BadLine) else rec, str(e))
            if row["id"] not in done_ids:
                rows.append(row)
    return rows


# -- Arrow tables (Parquet, datasets) ------------------------------------------------------------


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
            rows.append(_malformed(sid, _brief(rec), f"caption is {type(caption).__name__}, not a string"))
        elif not data and not path:
            rows.append(_malformed(sid, _brief(rec), f"image column {cfg.image_column!r} holds no bytes and no path"))
        else:
            rows.append(_row(source_id=sid, own_id=own_id, image=bytes(data), image_path=path, caption=caption, root=root))
    return rows


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without raw bytes, for hashing/reporting a malformed one."""
    return {k: (f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else v) for k, v in rec.items()}


def _hf_dataset(cfg: InputConfig):
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


# -- planning and streaming reads ----------------------------------------------------------------


def _plan(cfg: InputConfig, fmt: str) -> list[dict[str, Any]]:
    """Work items {file, label, part (Parquet row group), start (index of its first record), count (-1: all)}.

    Counts honour input.limit in input order, so a limited read is the same prefix on every run.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(cfg.path or "")
    items: list[dict[str, Any]] = []
    if fmt == "parquet":
        for f in _files(p, (".parquet",)):
            meta, start = pq.ParquetFile(f).metadata, 0
            for rg in range(meta.num_row_groups):
                n = meta.row_group(rg).num_rows
                items.append({"file": str(f), "label": _label(f, p), "part": rg, "start": start, "count": n})
                start += n
    elif fmt == "hf":
        start = 0
        for f in [c["filename"] for c in _hf_dataset(cfg).cache_files]:
            with pa.memory_map(f) as src:
                n = sum(b.num_rows for b in pa.ipc.open_stream(src))
            items.append({"file": f, "label": cfg.split, "part": 0, "start": start, "count": n})
            start += n
    else:
        for f in _files(p, TAR_SUFFIXES):
            n = _count_tar_samples(f) if cfg.limit is not None else -1  # -1: all (headers scanned only for limit)
            items.append({"file": str(f), "label": _label(f, p), "part": 0, "start": 0, "count": n})
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
    batch: dict[str, Any], *, cfg: InputConfig, fmt: str, root: str, done_ids: frozenset[str]
) -> Iterator[dict]:
    """Ray UDF: work items -> normalized row batches (a generator, so one item streams in pieces)."""
    for i in range(len(batch["file"])):
        it = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
        rows_iter = _tar_rows(it, cfg, root) if fmt == "webdataset" else _table_rows(it, cfg, fmt, root)
        buf: list[dict[str, Any]] = []
        for row in rows_iter:
            if row["id"] not in done_ids:
                buf.append(row)
            if len(buf) >= ROWS_PER_BATCH:
                yield rows_to_batch(buf)
                buf = []
        if buf:
            yield rows_to_batch(buf)


def _table_rows(it: dict[str, Any], cfg: InputConfig, fmt: str, root: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [c for c in (cfg.image_column, cfg.caption_column, cfg.id_column) if c]
    if fmt == "parquet":
        batches = pq.ParquetFile(it["file"]).iter_batches(batch_size=ROWS_PER_BATCH, row_groups=[it["part"]], columns=cols)
    else:
        table = pa.ipc.open_stream(pa.memory_map(it["file"])).read_all()  # zero-copy: the file is mapped
        batches = table.select(cols).to_batches(max_chunksize=ROWS_PER_BATCH)
    index, left = it["start"], it["count"]
    for b in batches:
        recs = b.slice(0, left).to_pylist()
        yield from arrow_rows(recs, index, it["label"], cfg, root)
        index, left = index + len(recs), left - len(recs)
        if left <= 0:
            return


# -- WebDataset ----------------------------------------------------------------------------------


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first '.' of the base name; the rest is the extension."""
    d, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower() if dot else ""


def _tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]] | tuple[None, str]]:
    """(key, {ext: bytes}) in tar order; a final (None, error) if the tar breaks off."""
    key, parts = None, {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                k, ext = _split_key(m.name)
                if k != key and key is not None:
                    yield key, parts
                    parts = {}
                key = k
                data = tf.extractfile(m).read()
                if len(data) != m.size:
                    raise tarfile.ReadError(f"member {m.name} has {len(data)} of {m.size} bytes")
                parts[ext] = data
            end = tf.offset
        _check_tar_tail(path, end)
    except (tarfile.TarError, OSError, EOFError) as e:
        if key is not None and parts:
            yield key, parts  # the members read before the break; incomplete ones are rejected as such
        yield None, f"{type(e).__name__}: {e}" + (f" (after sample {key!r})" if key is not None else "")
        return
    if key is not None:
        yield key, parts


def _check_tar_tail(path: str, end: int) -> None:
    """tarfile silently stops at a cut-off or garbled header; bytes left after the last member mean exactly that."""
    if not path.lower().endswith(".tar"):
        return  # compressed: a cut stream already raises EOFError
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(1 << 16)
    if tail.strip(b"\0"):
        raise tarfile.ReadError(f"unparseable data at byte {end} (cut-off or corrupt header)")


def _count_tar_samples(path: Path) -> int:
    keys, last = 0, None
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                k = _split_key(m.name)[0] if m.isfile() else last
                keys, last = keys + (k != last), k
    except (tarfile.TarError, OSError, EOFError):
        keys += 1  # the break-off itself becomes one reject row
    return keys


def webdataset_row(key: str, parts: dict[str, bytes], sid: str, cfg: InputConfig) -> dict[str, Any]:
    """Row of one WebDataset sample: one image member plus a .txt or .json caption."""
    brief = {"key": key, "members": sorted(parts)}
    by_kind: dict[str, list[str]] = {}
    for ext in sorted(parts):  # a field "x.png" counts as png: match on the last dot-part
        by_kind.setdefault(ext.rsplit(".", 1)[-1], []).append(ext)
    images = [e for kind in IMAGE_EXTS for e in by_kind.get(kind, [])]
    if len(images) != 1:
        return _malformed(sid, brief, f"sample {key!r} has {len(images)} image members {sorted(parts)}, need exactly one")
    own_id, caption = None, None
    try:
        for ext in by_kind.get("json", [])[:1]:
            meta = json.loads(parts[ext].decode("utf-8"))
            if isinstance(meta, dict):
                caption = meta.get(cfg.caption_column, meta.get("caption", meta.get("text")))
                own_id = meta.get(cfg.id_column or "id")
            else:
                caption = meta
        for ext in by_kind.get("txt", [])[:1]:
            caption = parts[ext].decode("utf-8")
    except (UnicodeDecodeError, ValueError) as e:
        return _malformed(sid, brief, f"sample {key!r}: caption not decodable: {e}")
    if not isinstance(caption, str):
        return _malformed(sid, brief, f"sample {key!r}: no string caption in .txt or .json ({sorted(parts)})")
    if own_id is not None and not isinstance(own_id, (str, int)) or isinstance(own_id, bool):
        own_id = None
    return _row(source_id=sid, own_id=own_id, image=parts[images[0]], caption=caption)


def _tar_rows(it: dict[str, Any], cfg: InputConfig, root: str) -> Iterator[dict[str, Any]]:
    left = it["count"]
    for key, parts in _tar_samples(it["file"]):
        if left == 0:
            return
        left -= 1
        if key is None:
            yield _malformed(f"{it['label']}#<broken>", {"tar": it["label"], "error": parts}, f"tar ends early: {parts}",
                             reason="unreadable_shard")
        else:
            yield webdataset_row(key, parts, f"{it['label']}#{key}", cfg)


# -- entry point ---------------------------------------------------------------------------------


def read_source(cfg: InputConfig, done_ids: frozenset[str] = frozenset()):
    """Ray Dataset of rows for the input (every BASE_COLUMNS column, plus `image_root`); done ids skipped."""
    import ray.data

    if not cfg.path:
        raise InputError("input.path is not set (pass --input PATH)")
    p = Path(cfg.path)
    if not p.exists() and cfg.format != "hf":
        raise InputError(f"input path {p} does not exist (for a hub dataset id set input.format=hf)")
    fmt = detect_format(cfg)
    root = image_root(cfg)
    if fmt == "json":
        rows = json_rows(cfg, done_ids)
        log.info("read %d rows from JSON input %s", len(rows), p)
        if not rows:
            return ray.data.from_items([empty_row(image_root="")]).limit(0)  # empty, but with the row schema
        return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // ROWS_PER_BATCH, 64)))
    items = _plan(cfg, fmt)
    log.info("reading %s input %s as %d work items", fmt, p, len(items))
    if not items:
        return ray.data.from_items([empty_row(image_root="")]).limit(0)  # empty, but with the row schema
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_items, batch_size=1, batch_format="numpy", num_cpus=0.25,  # light I/O; never starve engine actors
        fn_kwargs={"cfg": cfg, "fmt": fmt, "root": root, "done_ids": frozenset(done_ids)},
    )

