"""What every reader shares: read-stage row builders, file listing, input errors, the image root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.core.rows import content_id, count_row_stage, empty_row, reject

STAGE = "read"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ROWS_PER_BATCH = 64  # rows per yielded block: bounds block memory when images are embedded


class InputError(ValueError):
    """The whole input cannot be read; the message is one line saying what and where."""


class Malformed(ValueError):
    """One record cannot be read; the message is the row's reject detail."""


def make_row(*, source_id: str, own_id: Any, image: bytes = b"", image_path: str = "", caption: str,
             user_prompt: str = "", root: str = "") -> dict[str, Any]:
    """A read row; its id is the record's own id, else a hash of its content."""
    if own_id is not None and not isinstance(own_id, bool) and str(own_id) != "":
        rid = str(own_id)
    else:
        rid = content_id(image if image else image_path, user_prompt, caption)
    row = empty_row(id=rid, source_id=source_id, image=image, image_path=image_path, caption=caption,
                    user_prompt=user_prompt, image_root=root if image_path else "")
    count_row_stage(row, STAGE)
    return row


def malformed_row(source_id: str, raw: Any, detail: str, reason: str = "malformed_record") -> dict[str, Any]:
    """A rejected row for an unreadable record; its id hashes the raw record so re-reads agree."""
    # ASCII dump: lone surrogates from JSON escapes must not break hashing.
    text = json.dumps(raw, sort_keys=True, default=repr)
    row = empty_row(id=content_id(reason, text), source_id=source_id, image_root="")
    reject(row, STAGE, reason, detail)
    count_row_stage(row, STAGE)
    return row


def is_hf_dir(p: Path) -> bool:
    """A folder written by `datasets` `save_to_disk` (a Dataset or a DatasetDict)."""
    return (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())


def list_files(p: Path, suffixes: tuple[str, ...], recursive: bool = True) -> list[Path]:
    """The file itself if its name ends in a suffix, else the folder's matching files (no hidden/_ names), sorted."""
    if p.is_file():
        return [p] if p.name.lower().endswith(suffixes) else []
    it = p.rglob("*") if recursive else p.iterdir()
    return sorted(f for f in it if f.is_file() and f.name.lower().endswith(suffixes) and not f.name.startswith((".", "_")))


def source_label(f: Path, base: Path) -> str:
    """How `source_id` names file f of input base: its name for a file input, else its path inside the folder."""
    return f.name if base.is_file() else f.relative_to(base).as_posix()


def image_root(cfg: InputConfig) -> str:
    """Absolute folder relative image paths live in ("" for a hub dataset without input.image_root)."""
    if cfg.image_root:
        return os.path.realpath(cfg.image_root)
    p = Path(cfg.path or "")
    if not p.exists():
        return ""
    return os.path.realpath(p if p.is_dir() else p.parent)
