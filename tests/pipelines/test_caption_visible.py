"""Captions with no visible text (controls, invisible Unicode only) are rejected at ingest as `empty_caption`.

Reference for "invisible": the Unicode general categories (UnicodeData.txt, via `unicodedata.category`):
Cc (controls such as NUL), Cf (format: zero-width space U+200B, BOM U+FEFF, bidi marks U+200E/U+2066..),
Zs/Zl/Zp (separators). The expectations below come from those categories, not from the code under test.
"""

from __future__ import annotations

import io
import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.config import InputConfig
from pipelines.ingest import IngestStage, caption_problem
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch

INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def _ingest(captions: list[str]) -> list[dict]:
    stage = IngestStage(InputConfig(min_caption_chars=1))
    rows = [empty_row(id=f"r{i}", source_id=f"t#{i}", image=_png(), caption=c) for i, c in enumerate(captions)]
    return batch_to_rows(stage(rows_to_batch(rows)))


@pytest.mark.parametrize("caption", [
    "\x00",
    "\x00" * 12,
    "\x01\x02\x1b\x7f",
    "\x85\x9f",  # C1 controls
    "\u200b\u200b",  # zero-width spaces
    "\ufeff",  # byte-order mark
    "\u200e\u200f\u202a\u202e\u2066\u2069",  # bidi marks, embeddings, isolates
    "\u2060\u00ad\u200d",  # word joiner, soft hyphen, zero-width joiner
    " \x00\t\u200b\n\ufeff\u3000",
    "\u3164\u3164",  # Hangul filler: a letter by category, blank on screen
])
def test_caption_without_visible_text_is_empty(caption):
    assert all(unicodedata.category(c) in INVISIBLE_CATEGORIES or c == "\u3164" for c in caption)
    reason, detail = caption_problem(caption, 1)
    assert reason == "empty_caption"
    assert "\n" not in detail


def test_invisible_around_the_image_tag_is_only_the_tag():
    assert caption_problem("\u200b<image>\x00", 1)[0] == "caption_only_image_tag"


def test_short_caption_counts_visible_characters_only():
    # "ab" has 2 visible characters; the NULs and zero-width spaces around them add none.
    assert caption_problem("a\x00\x00\u200bb\u200b\u200b", 3)[0] == "short_caption"
    assert caption_problem("a\x00\x00\u200bb\u200b\u200b", 2) is None


_invisible_char = st.characters(categories=INVISIBLE_CATEGORIES)
_visible_char = st.characters(categories=("Lu", "Ll", "Lo", "Nd", "Po", "Sm", "So"),
                              exclude_characters="\u115f\u1160\u3164\uffa0\u2800")


@settings(max_examples=200, deadline=None)
@given(st.text(_invisible_char, max_size=20))
def test_fuzz_only_invisible_is_always_empty_caption(caption):
    assert caption_problem(caption, 1)[0] == "empty_caption"


@settings(max_examples=200, deadline=None)
@given(st.text(_invisible_char, max_size=6), _visible_char, st.text(_invisible_char, max_size=6))
def test_fuzz_one_visible_character_is_not_empty(before, ch, after):
    problem = caption_problem(before + ch + after, 1)
    assert problem is None or problem[0] == "caption_only_image_tag" and ch in "<>"


def test_ingest_rejects_invisible_captions_and_strips_controls_from_kept_ones():
    rows = _ingest(["\x00\x00\x00", "\u200b\ufeff\u200e", "A cell\x00 under\x1b the microscope.\u200b", "Plain."])
    assert [(r["reject_stage"], r["reject_reason"]) for r in rows] == [
        ("ingest", "empty_caption"), ("ingest", "empty_caption"), ("", ""), ("", "")]
    # Control characters (category Cc, bar tab/newline) are removed; format characters such as the
    # zero-width space are kept inside a visible caption (they may join emoji or scripts).
    assert rows[2]["caption"] == "A cell under the microscope.\u200b"
    assert rows[3]["caption"] == "Plain."
    for r in rows:
        assert json.loads(r["counts"])["ingest"] == {"in": 1, "out": 0 if r["reject_stage"] else 1,
                                                     "rejected": 1 if r["reject_stage"] else 0}
