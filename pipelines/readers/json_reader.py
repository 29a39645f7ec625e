"""AdaMLLM/ShareGPT JSON and JSONL records -> read rows, streamed record by record (paths and captions only).

A folder input reads its `*.json` files (else its `*.jsonl` files) in sorted order, not recursively.
A JSON list is never parsed whole: `iter_json_records` decodes one element at a time from a bounded
buffer with the stdlib decoder (same semantics as `json.loads`), so memory stays flat at millions of
records. One work item per file is read by a Ray task; the driver only lists files (and, with
`input.limit`, counts records up to the limit).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import InputConfig
from pipelines.readers.common import InputError, Malformed, image_root, list_files, make_row, malformed_row, source_label

PROBE_RECORDS = 100  # check_json looks at this many records for one well-formed one
CHUNK_CHARS = 1 << 20  # characters read per refill of the streaming decoder
MAX_RECORD_CHARS = 64 << 20  # one record larger than this is a broken file, not a record
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
        n = 0
        # Every file must open as a list with a first record; only the first PROBE_RECORDS are decoded.
        for rec in iter_json_records(f):
            if n >= max(1, PROBE_RECORDS - len(probe)):
                break
            probe.append((f"{f.name}#{n}", rec))
            n += 1
        if not n:
            raise InputError(f"{f} holds no records (empty list)")
    probe = probe[:PROBE_RECORDS]
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


def iter_json_records(f: Path) -> Iterator[Any]:
    """Records of a JSON list file, or of a JSONL file (an undecodable line stays as `_BadLine`), one at a time.

    Raises InputError (one line) for a file that is not a JSON list or breaks off; records before the
    break have been yielded by then.
    """
    try:
        with open(f, encoding="utf-8") as fh:
            if f.name.lower().endswith(".jsonl"):
                # Records are `str.splitlines` lines (as for a whole-file read), taken a physical line at a time.
                for physical in fh:
                    for line in physical.splitlines():
                        if line.strip():
                            try:
                                yield json.loads(line)
                            except ValueError as e:
                                yield _BadLine(line, str(e))
                return
            yield from _iter_json_list(f, fh)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {f}: {e}") from None


def _iter_json_list(f: Path, fh) -> Iterator[Any]:
    """Elements of the JSON list in `fh`, decoded one by one with `json.JSONDecoder.raw_decode`."""
    dec = json.JSONDecoder()
    buf, pos, base, eof = "", 0, 0, False  # base: characters dropped from the front of buf

    def more() -> bool:
        nonlocal buf, pos, base, eof
        if eof:
            return False
        chunk = fh.read(CHUNK_CHARS)
        eof = not chunk
        buf, base, pos = buf[pos:] + chunk, base + pos, 0
        return not eof

    def skip_ws() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\n\r":
                pos += 1
            if pos < len(buf) or not more():
                return buf[pos] if pos < len(buf) else ""

    def bad(msg: str) -> InputError:
        return InputError(f"{f} is not valid JSON: {msg} (char {base + pos})")

    def value() -> Any:
        nonlocal pos
        while True:
            try:
                obj, end = dec.raw_decode(buf, pos)
                if end < len(buf) or eof:  # a value ending at the buffer's end may go on (a number)
                    pos = end
                    return obj
            except json.JSONDecodeError as e:
                if eof or len(buf) - pos > MAX_RECORD_CHARS:
                    raise bad(e.msg) from None
            more()

    first = skip_ws()
    if first != "[":
        if not first:
            raise bad("empty file")
        obj = value()  # not a list: say what it is if it decodes at all
        raise InputError(f"{f} must hold a JSON list of records, got {type(obj).__name__}")
    pos += 1
    if skip_ws() == "]":
        pos += 1
    else:
        while True:
            yield value()
            c = skip_ws()
            if c == "]":
                pos += 1
                break
            if c != ",":
                raise bad("expected ',' or ']' after a record")
            pos += 1
            skip_ws()
    if skip_ws():
        raise bad("extra data after the list")


def count_json_records(f: Path, upto: int) -> int:
    """Records in f, counting at most `upto`; a file that breaks off counts its break as one (reject) row."""
    n = 0
    try:
        for _ in iter_json_records(f):
            if n >= upto:
                break
            n += 1
    except InputError:
        n = min(n + 1, upto)
    return n


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


def plan_json(p: Path, limit: int | None) -> list[dict[str, Any]]:
    """One work item per file; with a limit, counts come from streaming each file up to what is left."""
    files = json_files(p)
    if not files:
        raise InputError(f"no .json or .jsonl files in folder {p}")
    items, left = [], limit
    for f in files:
        count = -1
        if left is not None:
            count = count_json_records(f, left) if left > 0 else 0
            left -= count
        items.append({"file": str(f), "label": source_label(f, p), "part": 0, "start": 0, "count": count})
    return items


def json_item_rows(it: dict[str, Any], cfg: InputConfig, root: str) -> Iterator[dict[str, Any]]:
    """Rows of one JSON/JSONL file work item, at most `count` (-1: all); a break-off is one reject row."""
    left = it["count"]
    records = iter_json_records(Path(it["file"]))
    i = 0
    while left != 0:
        try:
            rec = next(records)
        except StopIteration:
            return
        except InputError as e:
            yield malformed_row(f"{it['label']}#<broken>", {"file": it["label"], "error": str(e)},
                                f"JSON file ends early: {e}", reason="unreadable_shard")
            return
        sid = f"{it['label']}#{i}"
        try:
            path, user, caption, own_id = parse_json_record(rec)
            yield make_row(source_id=sid, own_id=own_id, image_path=path, caption=caption, user_prompt=user, root=root)
        except Malformed as e:
            yield malformed_row(sid, rec.line if isinstance(rec, _BadLine) else rec, str(e))
        i, left = i + 1, left - 1


def json_rows(cfg: InputConfig, done_ids: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """All rows of a JSON/JSONL input as a list (tests and small inputs; runs stream `json_item_rows`)."""
    root = image_root(cfg)
    return [row for it in plan_json(Path(cfg.path or ""), cfg.limit) for row in json_item_rows(it, cfg, root)
            if row["id"] not in done_ids]
