"""Image safety and normalization: path containment, guarded decoding, RGB conversion, resizing.

Pure functions. Every way an image can be unusable raises `ImageRejected(reason, detail)` with a
snake_case reason that becomes the row's `reject_reason`:

- `path_escape`: the path leaves the image root (`../`, an absolute path elsewhere, a symlink out).
- `empty_image`: zero bytes.
- `unreadable_image`: not an image PIL can identify or decode.
- `truncated_image`: the header parses but the pixel data ends early.
- `too_many_pixels`: width*height over the limit, checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes that carry transparency; they are composited on white so transparent pixels do not turn black.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageRejected(Exception):
    """An image that cannot be used. `reason` is a short snake_case word, `detail` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def safe_resolve(root: str | os.PathLike, rel: str) -> Path:
    """Resolve `rel` inside `root`, following symlinks; raise `ImageRejected("path_escape")` if it leaves.

    An absolute `rel` is accepted only when it resolves inside `root` (inputs sometimes store absolute
    paths to their own image folder). Existence is not checked here: a missing file is the caller's
    `missing_image`, and the containment check runs first so nothing outside the root is ever probed.
    """
    if not rel:
        raise ImageRejected("missing_image", "empty image path")
    if "\x00" in rel:
        raise ImageRejected("path_escape", f"NUL byte in image path {rel!r}")
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base / rel))  # base / "/abs" == "/abs"
    if target != base and base not in target.parents:
        kind = "absolute path" if os.path.isabs(rel) else "path"
        raise ImageRejected("path_escape", f"{kind} {rel!r} resolves to {target}, outside image root {base}")
    return target


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode image bytes to an RGB PIL image (EXIF orientation applied), or raise `ImageRejected`."""
    if not data:
        raise ImageRejected("empty_image", "zero-byte image")
    try:
        # PIL warns above ~89 MP and raises above ~179 MP; our own limit below is the one that decides.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_many_pixels", str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageRejected("unreadable_image", f"not a decodable image ({len(data)} bytes): {e}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageRejected("too_many_pixels", f"{w}x{h} = {w * h} pixels > limit {max_pixels}")
    if w == 0 or h == 0:
        raise ImageRejected("unreadable_image", f"image has zero size {w}x{h}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_many_pixels", str(e)) from None
    except OSError as e:
        reason = "truncated_image" if "truncated" in str(e).lower() else "unreadable_image"
        raise ImageRejected(reason, f"{img.format or 'image'} {w}x{h}: {e}") from None
    except (SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageRejected("unreadable_image", f"{img.format or 'image'} {w}x{h}: {e}") from None
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the image; keep it unrotated
        pass
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit scaled (not clipped), alpha composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        # PIL's own I -> L conversion clips at 255, which turns most 16-bit images white.
        arr = np.asarray(img).astype(np.int64)
        arr = np.clip(arr, 0, 65535) // 257 if mode != "I" or arr.max() > 255 else np.clip(arr, 0, 255)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = np.zeros_like(arr) if hi <= lo else (np.nan_to_num(arr, nan=lo) - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in img.info or mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, P, L, 1


def encode_png(img: Image.Image, compress_level: int = 3) -> bytes:
    """PNG bytes of `img` (no metadata, so equal pixels give equal bytes)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def resize_max_pixels(img: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale so width*height <= max_pixels, keeping the aspect ratio; smaller images are returned as is."""
    w, h = img.size
    if w * h <= max_pixels:
        return img
    scale = math.sqrt(max_pixels / (w * h))
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    while nw * nh > max_pixels:  # int() rounding can still overshoot by a row or column
        if nw >= nh:
            nw -= 1
        else:
            nh -= 1
    return img.resize((max(nw, 1), max(nh, 1)), Image.Resampling.BICUBIC)
