"""Seeded procedural image-caption sets for tests, demos and offline runs.

`generate(domain, out_dir)` writes the upstream AdaMLLM input format:

    OUT/image_caption_pairs.json  [{"images": ["images/<file>.png"], "messages": [
                                     {"role": "user", "content": "<image>Describe the image."},
                                     {"role": "assistant", "content": CAPTION}]}, ...]
    OUT/images/<domain>_<index>.png
    OUT/metadata.jsonl            {"image": "images/<file>.png", "domain": ..., "caption": ..., "attributes": {...}}

The attributes are the ground truth each caption states (VQA sets are built from them):

- `biomed` (`biomed.py`): `modality` ("X-ray" | "CT" | "MRI" | "ultrasound"), `region` ("chest" | "abdomen" |
  "head" | "knee" | "hand"), `count` (number of findings, 0 means "no abnormal findings"), `findings`: list of
  `{kind, size_mm, position, density, center}` with kind in `BIOMED_KINDS`, size_mm an int (diameter, or
  length of a fracture line), position in `POSITIONS` (image coordinates: "left" is the viewer's left),
  density "high" | "low" (captions say "high-density"), center `[x, y]` as fractions of width/height.
- `food` (`food.py`): `dish`, `container` ("plate" | "bowl"), `container_color`, `count` (total pieces),
  `ingredients`: list of `{name, color, count}` (captions say e.g. "three red tomatoes").

The domains' tables and caption templates are data: `tables/<domain>.yaml`.

Item i depends only on (domain, seed, i), so a smaller n yields a prefix of a larger one. PNGs are
encoded without timestamps, so the same seed gives byte-identical files. Bump `VERSION` whenever the
output for a given seed changes (it names the `ensure_sample` cache folder).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.sample_data.biomed import (
    BIOMED_KINDS, MODALITY_REGIONS, REGION_FOV_MM, REGION_KINDS, caption_biomed, draw_biomed, sample_biomed,
)
from pipelines.sample_data.common import NUMBER_WORDS, POSITIONS, Rng, number_word
from pipelines.sample_data.food import (
    COLORS, CONTAINER_COLORS, DISHES, INGREDIENTS, caption_food, draw_food, layout_food, sample_food,
)
from pipelines.tiny import cache_root

__all__ = [
    "BIOMED_KINDS", "COLORS", "CONTAINER_COLORS", "DISHES", "DOMAINS", "INGREDIENTS", "MODALITY_REGIONS",
    "NUMBER_WORDS", "POSITIONS", "REGION_FOV_MM", "REGION_KINDS", "USER_PROMPT", "VERSION", "Rng", "Sampler",
    "caption_biomed", "caption_food", "draw_biomed", "draw_food", "ensure_sample", "generate", "layout_food",
    "main", "make_item", "number_word", "png_bytes", "sample_biomed", "sample_food",
]

logger = logging.getLogger(__name__)

VERSION = 1
USER_PROMPT = "<image>Describe the image."
Sampler = Callable[[Rng], dict[str, Any]]
DOMAINS: dict[str, tuple[Sampler, Callable[..., Image.Image], Callable[[dict, Rng], str]]] = {
    "biomed": (sample_biomed, draw_biomed, caption_biomed),
    "food": (sample_food, draw_food, caption_food),
}


def make_item(domain: str, index: int, seed: int = 0, image_size: int = 128) -> tuple[dict, Image.Image, str]:
    """(attributes, image, caption) of item `index`; independent of every other item."""
    sample, draw, caption = DOMAINS[domain]
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode()), index])
    attrs = sample(rng)
    # Separate streams, so the texture never shifts the attributes or the caption wording.
    draw_rng, caption_rng = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(2))
    return attrs, draw(attrs, image_size, draw_rng), caption(attrs, caption_rng)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)  # PIL writes no time chunk: bytes depend on pixels only
    return buf.getvalue()


def generate(domain: str, out_dir: Path, n: int = 64, seed: int = 0, image_size: int = 128) -> Path:
    """Write n items of `domain` to out_dir; return the path of image_caption_pairs.json."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown sample domain {domain!r}; allowed: {', '.join(sorted(DOMAINS))}")
    if n < 1 or image_size < 32:
        raise ValueError(f"need n >= 1 and image_size >= 32, got n={n}, image_size={image_size}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    pairs, meta = [], []
    for i in range(n):
        attrs, img, caption = make_item(domain, i, seed, image_size)
        rel = f"images/{domain}_{i:05d}.png"
        (out_dir / rel).write_bytes(png_bytes(img))
        pairs.append({"images": [rel], "messages": [{"role": "user", "content": USER_PROMPT},
                                                    {"role": "assistant", "content": caption}]})
        meta.append(json.dumps({"image": rel, "domain": domain, "caption": caption, "attributes": attrs}))
    (out_dir / "metadata.jsonl").write_text("\n".join(meta) + "\n", encoding="utf-8")
    json_path = out_dir / "image_caption_pairs.json"
    json_path.write_text(json.dumps(pairs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote %d %s samples (seed %d) to %s", n, domain, seed, out_dir)
    return json_path


def ensure_sample(domain: str, n: int = 64, seed: int = 0) -> Path:
    """Cached `generate`: built once into a temp folder and renamed into place, so readers never see half a set."""
    final = cache_root() / "sample" / f"{domain}-n{n}-s{seed}-v{VERSION}"
    json_path = final / "image_caption_pairs.json"
    if json_path.exists():
        return json_path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the tiny models
    try:
        generate(domain, tmp, n=n, seed=seed)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first; its copy is identical
            if not json_path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json_path


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m pipelines.sample_data --domain food --out DIR [--n N] [--seed S] [--image-size PX]`."""
    ap = argparse.ArgumentParser(description="Write a seeded procedural image-caption set (AdaMLLM input format).")
    ap.add_argument("--domain", required=True, choices=sorted(DOMAINS))
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--n", type=int, default=64, help="number of images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate(args.domain, args.out, n=args.n, seed=args.seed, image_size=args.image_size)
