"""Ingest stage: the safety gate every image passes before a model sees it.

For each row: check the caption, load the image (embedded bytes, or `image_path` resolved inside the
row's `image_root` with `safe_resolve`), decode it with the pixel limit checked from the header, convert
it to RGB, and store normalized PNG bytes in `image` with `width`/`height`. Anything unusable is
rejected at stage "ingest" with one of these reasons:

`empty_caption`, `caption_only_image_tag`, `short_caption`, `missing_image`, `path_escape`,
`file_too_large`, `empty_image`, `unreadable_image`, `truncated_image`, `too_many_pixels`.

Accepted captions are stripped of `<image>` tags, control characters (other than tab and newline)
and surrounding whitespace: the tag belongs to the user turn, and a stray one in the answer would add
an image placeholder to the chat template; a NUL or escape byte has no business in a training answer.
A caption counts as empty when it has no visible character (only whitespace, controls, or invisible
format characters such as zero-width spaces, BOMs and bidi marks).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, ClassVar

from pipelines.config import InputConfig
from pipelines.core.images import ImageRejected, decode_image, encode_png, safe_resolve
from pipelines.core.rows import reject
from pipelines.core.stage import Stage

log = logging.getLogger(__name__)

IMAGE_TAG = "<image>"
# A compressed image file needs far fewer bytes per pixel than this; a larger file is not worth reading.
_MAX_BYTES_PER_PIXEL = 8
_BYTES_SLACK = 1 << 20


def caption_problem(caption: str, min_chars: int) -> tuple[str, str] | None:
    """(reason, detail) when a caption is unusable, else None.

    Only visible characters count: a caption of NUL bytes, zero-width spaces, BOMs or bidi marks has
    no text a model could learn from, so it is as empty as a blank one.
    """
    if not any(_visible(c) for c in caption):
        kind = "empty or whitespace" if not caption.strip() else "only control or invisible characters"
        return "empty_caption", f"caption is {kind} ({len(caption)} chars): {caption[:40]!r}"
    text = caption.replace(IMAGE_TAG, "").strip()
    if not any(_visible(c) for c in text):
        return "caption_only_image_tag", f"caption has no text besides the {IMAGE_TAG} tag: {caption[:80]!r}"
    n = sum(_visible(c) for c in text)
    if n < min_chars:
        return "short_caption", f"caption has {n} visible characters < input.min_caption_chars={min_chars}"
    return None


# Letters and symbols that render as blank space although Unicode files them as printable
# (Hangul fillers, the blank Braille pattern): used to fake "non-empty" text.
_BLANK_PRINTABLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# C0/C1 control characters except tab, newline and carriage return (Unicode category Cc).
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _visible(c: str) -> bool:
    """A character that shows ink: printable (not a control, format, separator, private-use or
    unassigned code point, per `str.isprintable`), not whitespace, not a blank filler."""
    return c.isprintable() and not c.isspace() and c not in _BLANK_PRINTABLE


def load_image_bytes(row: dict[str, Any], default_root: str, max_pixels: int) -> bytes:
    """The row's raw image bytes: embedded, or read from `image_path` inside the image root."""
    if row.get("image"):
        return row["image"]
    rel = row.get("image_path") or ""
    if not rel:
        raise ImageRejected("missing_image", "row has neither image bytes nor an image path")
    root = row.get("image_root") or default_root
    if not root:
        raise ImageRejected("missing_image", f"image path {rel!r} but no image root; set input.image_root")
    path = safe_resolve(root, rel)
    try:
        size = path.stat().st_size
        if size > max_pixels * _MAX_BYTES_PER_PIXEL + _BYTES_SLACK:
            raise ImageRejected("file_too_large", f"{rel}: {size} bytes for a limit of {max_pixels} pixels")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageRejected("missing_image", f"no file {rel!r} under {root}") from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise ImageRejected("unreadable_image", f"cannot read {rel!r}: {e.strerror or e}") from None


class IngestStage(Stage):
    """Decode, check and normalize every image and caption (row-level)."""

    name = "ingest"
    row_level = True
    requires: ClassVar = {
        "image": "raw image bytes (b'' when the row has a path)",
        "image_path": "image path relative to image_root ('' when bytes are embedded)",
        "caption": "ground-truth caption",
    }
    adds: ClassVar = {"width": 0, "height": 0}

    def __init__(self, cfg: InputConfig, default_root: str = ""):
        """`default_root`: folder of relative image paths, used only when a row lacks `image_root`
        (sources always set it for path rows)."""
        self.max_pixels = cfg.max_image_pixels
        self.min_chars = cfg.min_caption_chars
        self.default_root = default_root

    def process(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            problem = caption_problem(row["caption"], self.min_chars)
            if problem:
                reject(row, self.name, *problem)
                continue
            try:
                img = decode_image(load_image_bytes(row, self.default_root, self.max_pixels), self.max_pixels)
            except ImageRejected as e:
                reject(row, self.name, e.reason, e.detail)
                continue
            row["caption"] = _CONTROLS.sub("", row["caption"].replace(IMAGE_TAG, "")).strip()
            row["image"] = encode_png(img)
            row["width"], row["height"] = img.size

    @classmethod
    def ray_options(cls, num_cpus: int | None = None) -> dict[str, Any]:
        """Autoscaling pool of cheap actors, small batches (decoded images are big).

        A quarter CPU each, like the other light stages, so ingest never holds a whole core that an
        engine actor is waiting for; the pool grows while CPUs are idle.
        """
        import ray.data

        n = num_cpus or os.cpu_count() or 1
        return {"compute": ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, n)), "batch_size": 8, "num_cpus": 0.25}
