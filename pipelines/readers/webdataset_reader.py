"""WebDataset `.tar` shards (`<key>.jpg|png|...` plus `<key>.txt` or `<key>.json` caption) -> read rows.

One work item per shard, streamed by a Ray task. A shard that breaks off yields the samples read before
the break and one row rejected as `unreadable_shard`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.readers.common import TAR_SUFFIXES, InputError, list_files, make_row, malformed_row, source_label

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def check_tars(p: Path) -> None:
    """Raise InputError unless there are shards and each one is a tar file."""
    tars = list_files(p, TAR_SUFFIXES)
    if not tars:
        raise InputError(f"no .tar shards in {p}")
    for t in tars:
        if not tarfile.is_tarfile(t):
            raise InputError(f"{t} is not a tar file")


def plan_tars(p: Path, limited: bool) -> list[dict[str, Any]]:
    """One work item per shard; count -1 (all) unless `limited`, when headers are scanned to count samples."""
    return [{"file": str(f), "label": source_label(f, p), "part": 0, "start": 0,
             "count": _count_tar_samples(f) if limited else -1} for f in list_files(p, TAR_SUFFIXES)]


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
        return malformed_row(sid, brief, f"sample {key!r} has {len(images)} image members {sorted(parts)}, need exactly one")
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
        return malformed_row(sid, brief, f"sample {key!r}: caption not decodable: {e}")
    if not isinstance(caption, str):
        return malformed_row(sid, brief, f"sample {key!r}: no string caption in .txt or .json ({sorted(parts)})")
    if own_id is not None and not isinstance(own_id, (str, int)) or isinstance(own_id, bool):
        own_id = None
    return make_row(source_id=sid, own_id=own_id, image=parts[images[0]], caption=caption)


def tar_rows(it: dict[str, Any], cfg: InputConfig) -> Iterator[dict[str, Any]]:
    """Rows of one shard work item, at most `count` of them (-1: all).

    A key that comes back after another key is a new sample (WebDataset groups consecutive members);
    its source id gets `~<n>` for the n-th time the key starts a sample, so source ids stay unique.
    """
    left = it["count"]
    seen: dict[str, int] = {}
    for key, parts in _tar_samples(it["file"]):
        if left == 0:
            return
        left -= 1
        if key is None:
            yield malformed_row(f"{it['label']}#<broken>", {"tar": it["label"], "error": parts},
                                f"tar ends early: {parts}", reason="unreadable_shard")
        else:
            seen[key] = n = seen.get(key, 0) + 1
            yield webdataset_row(key, parts, f"{it['label']}#{key}" + (f"~{n}" if n > 1 else ""), cfg)
