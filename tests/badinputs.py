"""A JSON input with every bad case the reader and ingest must survive, and the expected outcome of each.

`write_bad_json_input(dir)` writes

    dir/input/data.json       AdaMLLM records (good ones and one per bad case)
    dir/input/images/...      the image files (and a symlink pointing outside)
    dir/outside/secret.png    a valid image OUTSIDE the image root (targets of the escape cases)

and returns (json_path, expected) where expected maps each record's source_id ("data.json#<i>") to
"accepted" or the reason it must end with. `REASON_STAGE` says at which stage each reason is set;
`at_ingest(expected)` gives the outcome right after ingest (the later duplicate is still accepted there:
the sink rejects it at stage "dedup").
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# The "huge" image header claims 8000 x 8000 = 64 MP: above the default input.max_image_pixels (40 MP) and
# below PIL's own decompression-bomb warning (89 MP), so our header check is what rejects it.
HUGE_SIDE = 8000

REASON_STAGE = {
    "malformed_record": "read",
    "duplicate_id": "dedup",
    **{r: "ingest" for r in (
        "missing_image", "empty_image", "truncated_image", "unreadable_image", "path_escape",
        "too_many_pixels", "empty_caption", "caption_only_image_tag", "short_caption",
    )},
}


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _rgb(seed: int, w: int = 24, h: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def huge_png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def mode_images(seed: int = 0) -> dict[str, bytes]:
    """Encoded images in modes that must be converted to RGB (file name -> bytes)."""
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    rgba = Image.fromarray(rng.integers(0, 256, (16, 24, 4), dtype=np.uint8))
    pal = _rgb(seed + 1).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    cmyk = io.BytesIO()
    _rgb(seed + 2).convert("CMYK").save(cmyk, format="JPEG")
    return {
        "cmyk.jpg": cmyk.getvalue(),
        "gray16.png": _png(Image.fromarray((gray.astype(np.uint16) * 257))),
        "palette.png": _png(pal, transparency=0),
        "alpha.png": _png(rgba),
        "gray.png": _png(Image.fromarray(gray)),
        "bilevel.png": _png(Image.fromarray(gray > 127)),
    }


def _record(image: str, caption: str, prompt: str = "<image>Describe the image.") -> dict:
    return {"images": [image], "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": caption}]}


def write_bad_json_input(dir: Path) -> tuple[Path, dict[str, str]]:
    """Write the bad input under `dir`; return (json path, {source_id: "accepted" | reason})."""
    dir = Path(dir).resolve()
    root = dir / "input"
    images = root / "images"
    images.mkdir(parents=True)
    outside = dir / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(_rgb(99)))

    files: dict[str, bytes] = {f"good{i}.png": _png(_rgb(i)) for i in range(3)}
    jpeg = io.BytesIO()
    _rgb(7).save(jpeg, format="JPEG")
    files["good.jpg"] = jpeg.getvalue()
    files.update(mode_images())
    good_png = _png(_rgb(5, 64, 48))
    files["empty.png"] = b""
    files["truncated.png"] = good_png[: len(good_png) // 2]
    files["notimage.png"] = b"this is a text file, not an image\n"
    files["huge.png"] = huge_png_header(HUGE_SIDE, HUGE_SIDE)
    for name, data in files.items():
        (images / name).write_bytes(data)
    os.symlink(outside / "secret.png", images / "link.png")

    cases: list[tuple[object, str]] = [
        (_record("images/good0.png", "A red square on a blue field."), "accepted"),
        (_record("images/good1.png", "Two small dots near the edge.", prompt="<image>\nWhat is shown?"), "accepted"),
        ({"image": "images/good2.png", "conversations": [
            {"from": "human", "value": "<image>Describe."}, {"from": "gpt", "value": "A ShareGPT-style record."}]}, "accepted"),
        (_record("images/good.jpg", "A <image> JPEG photo."), "accepted"),
        *[(_record(f"images/{name}", f"An image stored as {name}."), "accepted") for name in mode_images()],
        (_record("images/nosuchfile.png", "This file does not exist."), "missing_image"),
        (_record("images/empty.png", "A zero-byte file."), "empty_image"),
        (_record("images/truncated.png", "A truncated PNG."), "truncated_image"),
        (_record("images/notimage.png", "Text pretending to be a PNG."), "unreadable_image"),
        (_record("../outside/secret.png", "Escape by dot-dot."), "path_escape"),
        (_record(str((outside / "secret.png").resolve()), "Escape by absolute path."), "path_escape"),
        (_record("images/link.png", "Escape by symlink."), "path_escape"),
        (_record("images/huge.png", "A header claiming 64 megapixels."), "too_many_pixels"),
        (_record("images/good0.png", ""), "empty_caption"),
        (_record("images/good0.png", "   \n\t "), "empty_caption"),
        (_record("images/good0.png", "\x00\x00\x00\x00\x00\x00\x00\x00"), "empty_caption"),
        (_record("images/good0.png", "\u200b\ufeff\u200e\u2066\u2069\u200d"), "empty_caption"),
        (_record("images/good0.png", "<image>"), "caption_only_image_tag"),
        ("not a record", "malformed_record"),
        ({"images": ["images/good0.png"], "messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
         "malformed_record"),
        ({"images": ["images/good0.png"], "messages": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": 42}]},
         "malformed_record"),
        ({"messages": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "no image list"}]}, "malformed_record"),
        (_record("images/good1.png", "A duplicated record."), "accepted"),
        (_record("images/good1.png", "A duplicated record."), "duplicate_id"),
    ]
    json_path = root / "data.json"
    json_path.write_text(json.dumps([rec for rec, _ in cases], indent=1))
    return json_path, {f"data.json#{i}": outcome for i, (_, outcome) in enumerate(cases)}


def at_ingest(expected: dict[str, str]) -> dict[str, str]:
    """Expected outcome right after ingest: stages after ingest (dedup) have not run yet."""
    return {k: ("accepted" if REASON_STAGE.get(v) == "dedup" else v) for k, v in expected.items()}
