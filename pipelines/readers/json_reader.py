"""AdaMLLM/ShareGPT JSON and JSONL records -> read rows, loaded on the driver (paths and captions only).

A folder input reads its `*.json` files (else its `*.jsonl` files) in sorted order, not recursively.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.readers.common import InputError, Malformed, image_root, list_files, make_row, malformed_row, source_label

PROBE_RECORDS = 100  # check_json looks at this many records for one well-formed one
_USER_ROLES, _ASSISTANT_ROLES = {"user", "human"}, {"assistant", "gpt"}


def json_files(p: Path) -> list[Path]:
    """A JSON/JSONL file, or a folder's *.json files (else its *.jsonl files), sorted; not recursive."""
    if p.is_file():
        return [p]
    return list_files(p, (".json",), recursive=False) or list_files(p, (".jsonl",), recursive=False)


def check_json(p: Path) -> None:
    """Raise InputError unless one of the first PROBE_RECORDS records is an image-caption record."""
    files = json_files(p)
    if not files:
        raise InputError(f"no .json or .jsonl files in folder {p}")
    probe: list[tuple[str, Any]] = []
    for f in files:
        records = _load_json_file(f)
        if not records:
            raise InputError(f"{f} holds no records (empty list)")
        probe += [(f"{f.name}#{i}", r) for i, r in enumerate(records[: PROBE_RECORDS - len(probe)])]
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
    if not all(isinstance(r, str) for r in roles) or roles[0] not in _USER_ROLES or roles[1] not in _ASSISTANT_ROLES:
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
            sid = f"{source_label(f, p)}#{i}"
            try:
                path, user, caption, own_id = parse_json_record(rec)
                row = make_row(source_id=sid, own_id=own_id, image_path=path, caption=caption, user_prompt=user,
                               root=root)
            except Malformed as e:
                row = malformed_row(sid, rec.line if isinstance(rec, _BadLine) else rec, str(e))
            if row["id"] not in done_ids:
                rows.append(row)
    return rows
