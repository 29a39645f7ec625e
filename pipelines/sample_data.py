"""Seeded procedural image-caption sets for tests, demos and offline runs.

`generate(domain, out_dir)` writes the upstream AdaMLLM input format:

    OUT/image_caption_pairs.json  [{"images": ["images/<file>.png"], "messages": [
                                     {"role": "user", "content": "<image>Describe the image."},
                                     {"role": "assistant", "content": CAPTION}]}, ...]
    OUT/images/<domain>_<index>.png
    OUT/metadata.jsonl            {"image": "images/<file>.png", "domain": ..., "caption": ..., "attributes": {...}}

The attributes are the ground truth each caption states (VQA sets are built from them):

- `biomed`: `modality` ("X-ray" | "CT" | "MRI" | "ultrasound"), `region` ("chest" | "abdomen" | "head" |
  "knee" | "hand"), `count` (number of findings, 0 means "no abnormal findings"), `findings`: list of
  `{kind, size_mm, position, density, center}` with kind in `BIOMED_KINDS`, size_mm an int (diameter, or
  length of a fracture line), position in `POSITIONS` (image coordinates: "left" is the viewer's left),
  density "high" | "low" (captions say "high-density"), center `[x, y]` as fractions of width/height.
- `food`: `dish`, `container` ("plate" | "bowl"), `container_color`, `count` (total pieces), `ingredients`:
  list of `{name, color, count}` (captions say e.g. "three red tomatoes").

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
from PIL import Image, ImageDraw, ImageFilter

from pipelines.tiny import cache_root

logger = logging.getLogger(__name__)

VERSION = 1
USER_PROMPT = "<image>Describe the image."
POSITIONS = {  # anchor (x, y) as fractions of the image
    "upper left": (0.32, 0.32), "upper right": (0.68, 0.32), "center": (0.5, 0.5),
    "lower left": (0.32, 0.68), "lower right": (0.68, 0.68),
}
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
    "sixteen seventeen eighteen nineteen twenty".split()
Rng = np.random.Generator


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _pick(rng: Rng, options: list | tuple) -> Any:
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------------- biomed
MODALITY_REGIONS = {
    "X-ray": ("chest", "hand", "knee", "abdomen"),
    "CT": ("chest", "abdomen", "head"),
    "MRI": ("head", "knee", "abdomen"),
    "ultrasound": ("abdomen",),
}
REGION_FOV_MM = {"chest": 360, "abdomen": 360, "head": 220, "knee": 160, "hand": 200}  # image width in mm
REGION_KINDS = {
    "chest": ("nodule", "mass", "opacity", "calcification"),
    "abdomen": ("mass", "cyst", "calcification"),
    "head": ("mass", "cyst", "calcification"),
    "knee": ("fracture line", "cyst", "calcification"),
    "hand": ("fracture line", "nodule", "calcification"),
}
# kind -> (size range as fraction of the field of view, allowed densities); ranges keep findings at
# neighbouring positions apart, so each one stays separately visible and countable.
BIOMED_KINDS = {
    "nodule": ((0.03, 0.09), ("high", "low")),
    "mass": ((0.10, 0.18), ("high", "low")),
    "opacity": ((0.08, 0.16), ("high",)),
    "calcification": ((0.03, 0.06), ("high",)),
    "cyst": ((0.05, 0.12), ("low",)),
    "fracture line": ((0.10, 0.22), ("low",)),
}
# Grey levels per modality: background, soft tissue, bone, air; noise sigma.
_PALETTE = {
    "X-ray": dict(bg=10, body=95, bone=215, air=35, noise=6.0),
    "CT": dict(bg=0, body=115, bone=235, air=12, noise=4.0),
    "MRI": dict(bg=0, body=130, bone=45, air=5, noise=7.0),
    "ultrasound": dict(bg=0, body=105, bone=200, air=30, noise=0.0),
}
_MODALITY_REGION_PAIRS = [(m, r) for m, regions in MODALITY_REGIONS.items() for r in regions]
_FINDING_COUNTS = (0, 1, 2, 3)
_FINDING_COUNT_P = (0.25, 0.4, 0.25, 0.1)


def sample_biomed(rng: Rng) -> dict[str, Any]:
    """Draw the ground truth of one biomed image."""
    modality, region = _pick(rng, _MODALITY_REGION_PAIRS)
    count = int(rng.choice(_FINDING_COUNTS, p=_FINDING_COUNT_P))
    fov = REGION_FOV_MM[region]
    findings = []
    for pos in rng.choice(list(POSITIONS), size=count, replace=False):
        kind = _pick(rng, REGION_KINDS[region])
        (lo, hi), densities = BIOMED_KINDS[kind]
        ax, ay = POSITIONS[str(pos)]
        findings.append({
            "kind": kind,
            "size_mm": int(round(rng.uniform(lo, hi) * fov)),
            "position": str(pos),
            "density": _pick(rng, densities),
            "center": [round(ax + rng.uniform(-0.04, 0.04), 3), round(ay + rng.uniform(-0.04, 0.04), 3)],
        })
    return {"modality": modality, "region": region, "count": count, "findings": findings}


def _box(s: int, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (x0 * s, y0 * s, x1 * s, y1 * s)


def _draw_region(d: ImageDraw.ImageDraw, region: str, s: int, p: dict) -> None:
    """Anatomy outline in grey levels of the palette (coordinates are fractions of the image)."""
    body, bone, air = p["body"], p["bone"], p["air"]
    if region == "chest":
        d.ellipse(_box(s, 0.06, 0.05, 0.94, 0.98), fill=body)
        for x0 in (0.16, 0.54):
            d.ellipse(_box(s, x0, 0.14, x0 + 0.30, 0.86), fill=air)
        for k in range(6):  # ribs
            y = 0.2 + 0.1 * k
            d.arc(_box(s, 0.12, y, 0.88, y + 0.25), 200, 340, fill=bone, width=max(1, s // 64))
        d.rectangle(_box(s, 0.47, 0.05, 0.53, 0.95), fill=bone)
        d.ellipse(_box(s, 0.44, 0.5, 0.7, 0.82), fill=body)
    elif region == "abdomen":
        d.ellipse(_box(s, 0.05, 0.12, 0.95, 0.9), fill=body)
        d.ellipse(_box(s, 0.12, 0.22, 0.48, 0.6), fill=min(255, body + 20))  # liver
        for x0 in (0.24, 0.64):
            d.ellipse(_box(s, x0, 0.52, x0 + 0.12, 0.7), fill=max(0, body - 25))  # kidneys
        d.ellipse(_box(s, 0.43, 0.66, 0.57, 0.8), fill=bone)  # vertebra
    elif region == "head":
        d.ellipse(_box(s, 0.12, 0.06, 0.88, 0.94), fill=bone)
        d.ellipse(_box(s, 0.16, 0.1, 0.84, 0.9), fill=body)
        for x0 in (0.4, 0.53):
            d.ellipse(_box(s, x0, 0.36, x0 + 0.07, 0.6), fill=air)  # ventricles
    elif region == "knee":
        d.rectangle(_box(s, 0.18, 0.0, 0.82, 1.0), fill=body)
        d.rectangle(_box(s, 0.36, 0.0, 0.64, 0.4), fill=bone)  # femur
        d.ellipse(_box(s, 0.28, 0.3, 0.72, 0.5), fill=bone)
        d.rectangle(_box(s, 0.32, 0.53, 0.68, 1.0), fill=bone)  # tibia
    elif region == "hand":
        d.rounded_rectangle(_box(s, 0.25, 0.45, 0.75, 0.95), radius=s // 10, fill=body)
        for k, x0 in enumerate((0.26, 0.36, 0.46, 0.56, 0.66)):
            top = 0.08 + 0.05 * abs(2 - k)
            d.rounded_rectangle(_box(s, x0, top, x0 + 0.08, 0.55), radius=s // 40, fill=body)
            d.rectangle(_box(s, x0 + 0.03, top + 0.03, x0 + 0.05, 0.8), fill=bone)
    else:
        raise ValueError(f"unknown region {region!r}")


def _draw_finding(d: ImageDraw.ImageDraw, f: dict, fov: int, s: int, rng: Rng) -> None:
    cx, cy = f["center"][0] * s, f["center"][1] * s
    r = max(1.5, f["size_mm"] / fov * s / 2)
    high = f["density"] == "high"
    fill, rim = (250, 70) if high else (8, 175)  # a contrasting rim keeps it visible on bone and on air
    kind = f["kind"]
    if kind == "nodule" or kind == "cyst":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=rim)
    elif kind == "mass":
        ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        rad = r * rng.uniform(0.7, 1.0, size=12)
        pts = list(zip((cx + rad * np.cos(ang)).tolist(), (cy + rad * np.sin(ang)).tolist()))
        d.polygon(pts, fill=fill, outline=rim)
    elif kind == "opacity":
        d.ellipse((cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), fill=200)
    elif kind == "calcification":
        for dx, dy in rng.uniform(-r, r, size=(4, 2)).tolist():
            d.ellipse((cx + dx - 1.5, cy + dy - 1.5, cx + dx + 1.5, cy + dy + 1.5), fill=fill, outline=rim)
    elif kind == "fracture line":
        t = np.linspace(-r, r, 6)
        jitter = rng.uniform(-0.15 * r, 0.15 * r, size=6)
        pts = list(zip((cx + t * 0.8).tolist(), (cy + 0.6 * t + jitter).tolist()))
        d.line(pts, fill=fill, width=max(1, s // 64))
    else:
        raise ValueError(f"unknown finding kind {kind!r}")


def draw_biomed(attrs: dict[str, Any], size: int, rng: Rng) -> Image.Image:
    """Render the attributes as a grayscale scan (returned as RGB). `rng` drives only texture and jitter."""
    p = _PALETTE[attrs["modality"]]
    # Noise first: a finding's jitter then cannot shift the texture elsewhere in the image.
    if attrs["modality"] == "ultrasound":  # multiplicative speckle inside a sector
        speckle, noise = (0.5 + 0.5 * rng.rayleigh(0.8, size=(size, size))) * _sector_mask(size), 0.0
    else:
        speckle, noise = 1.0, rng.normal(0.0, p["noise"], size=(size, size))
    img = Image.new("L", (size, size), p["bg"])
    d = ImageDraw.Draw(img)
    _draw_region(d, attrs["region"], size, p)
    for f in attrs["findings"]:
        _draw_finding(d, f, REGION_FOV_MM[attrs["region"]], size, rng)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32) * speckle + noise
    gray = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def _sector_mask(size: int) -> np.ndarray:
    m = Image.new("L", (size, size), 0)
    ImageDraw.Draw(m).pieslice(_box(size, -0.55, -1.15, 1.55, 0.95), 55, 125, fill=1)
    return np.asarray(m, dtype=np.float32)


def _article(word: str) -> str:
    w = word.lower()
    vowel = w[0] in "aeiou8" or w.startswith(("x-", "mri", "11 ", "18 "))  # "an 8 mm", "an 18 mm"
    return "an" if vowel else "a"


def _finding_phrase(f: dict, variant: int) -> str:
    size, dens = f"{f['size_mm']} mm", f"{f['density']}-density"
    core = f"{size} {dens} {f['kind']}" if variant == 0 else f"{dens} {f['kind']} measuring {size}"
    return f"{_article(core)} {core} in the {f['position']}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_BIOMED_TEMPLATES = (
    "{Modality} of the {region} showing {counted}: {findings}.",
    "{Region} {modality} with {counted}: {findings}.",
    "This {modality} image of the {region} shows {counted}. {sentences}",
    "{Findings}; {counted} in total on {a_modality} {modality} of the {region}.",
)
_BIOMED_NORMAL = (
    "{Modality} of the {region} with no abnormal findings.",
    "{Region} {modality}: no abnormal findings.",
    "This {modality} image of the {region} shows no abnormal findings.",
)


def caption_biomed(attrs: dict[str, Any], rng: Rng) -> str:
    m, region, n = attrs["modality"], attrs["region"], attrs["count"]
    fields = {"modality": m, "Modality": m[0].upper() + m[1:], "region": region, "Region": region.capitalize(),
              "a_modality": _article(m)}
    if n == 0:
        return _pick(rng, _BIOMED_NORMAL).format(**fields)
    phrases = [_finding_phrase(f, int(rng.integers(2))) for f in attrs["findings"]]
    counted = f"{number_word(n)} finding{'s' if n > 1 else ''}"
    joined = _join(phrases)
    sentences = " ".join(f"There is {p}." for p in phrases)
    return _pick(rng, _BIOMED_TEMPLATES).format(
        counted=counted, findings=joined, Findings=joined[0].upper() + joined[1:], sentences=sentences, **fields
    )


# ------------------------------------------------------------------------------------------------- food
COLORS = {  # exact RGB of each colour name (pieces are drawn flat, so tests can find them)
    "red": (205, 30, 35), "yellow": (245, 210, 40), "green": (60, 160, 60), "black": (25, 25, 25),
    "white": (240, 240, 235), "orange": (240, 130, 20), "blue": (50, 70, 190), "purple": (120, 40, 130),
    "brown": (130, 85, 45), "pink": (245, 150, 160),
}
# name -> (plural, shape, colour options, radius as fraction of the image)
INGREDIENTS = {
    "tomato": ("tomatoes", "circle", ("red", "yellow"), 0.045),
    "cucumber slice": ("cucumber slices", "ring", ("green",), 0.045),
    "olive": ("olives", "oval", ("black", "green"), 0.03),
    "egg slice": ("egg slices", "ring", ("white",), 0.045),
    "carrot stick": ("carrot sticks", "stick", ("orange",), 0.05),
    "pepper strip": ("pepper strips", "stick", ("red", "green", "yellow"), 0.05),
    "strawberry": ("strawberries", "triangle", ("red",), 0.045),
    "blueberry": ("blueberries", "circle", ("blue",), 0.028),
    "grape": ("grapes", "oval", ("green", "purple"), 0.035),
    "banana slice": ("banana slices", "ring", ("yellow",), 0.04),
    "mushroom": ("mushrooms", "cap", ("brown", "white"), 0.045),
    "shrimp": ("shrimps", "arc", ("pink",), 0.05),
    "broccoli floret": ("broccoli florets", "cluster", ("green",), 0.045),
}
# dish -> (container, base fill RGB or None, allowed ingredients)
DISHES = {
    "salad": ("plate", (110, 185, 90),
              ("tomato", "cucumber slice", "olive", "egg slice", "carrot stick", "pepper strip")),
    "fruit salad": ("bowl", None, ("strawberry", "blueberry", "grape", "banana slice")),
    "pasta": ("plate", (230, 200, 120), ("tomato", "olive", "mushroom", "shrimp", "broccoli floret")),
    "rice bowl": ("bowl", (215, 208, 190), ("egg slice", "shrimp", "carrot stick", "broccoli floret", "mushroom")),
    "soup": ("bowl", (190, 120, 60), ("carrot stick", "mushroom", "broccoli floret", "pepper strip")),
    "pizza": ("plate", (220, 125, 60), ("tomato", "olive", "mushroom", "pepper strip")),
}
CONTAINER_COLORS = {"white": (250, 250, 250), "blue": (90, 130, 200), "grey": (150, 150, 155), "beige": (225, 205, 170)}
_TABLES = ((150, 110, 70), (120, 120, 120), (90, 60, 40), (200, 190, 170))
_INNER_R, _MAX_PIECES = 0.30, 10


def sample_food(rng: Rng) -> dict[str, Any]:
    """Draw the ground truth of one food image (piece counts are final: the layout fits them)."""
    dish = _pick(rng, list(DISHES))
    container, _, allowed = DISHES[dish]
    k = int(rng.integers(2, min(4, len(allowed)) + 1))
    names = [str(x) for x in rng.choice(allowed, size=k, replace=False)]
    counts = [int(c) for c in rng.integers(1, 5, size=k)]
    while sum(counts) > _MAX_PIECES:  # keep plates countable
        counts[int(np.argmax(counts))] -= 1
    ingredients = [{"name": nm, "color": _pick(rng, INGREDIENTS[nm][2]), "count": c} for nm, c in zip(names, counts)]
    return {"dish": dish, "container": container, "container_color": _pick(rng, list(CONTAINER_COLORS)),
            "count": sum(counts), "ingredients": ingredients}


def layout_food(attrs: dict[str, Any], rng: Rng) -> list[tuple[int, float, float, float]]:
    """Piece centres (ingredient index, x, y, angle) in image fractions, with a gap so every piece is countable."""
    pieces = [(idx, INGREDIENTS[ing["name"]][3]) for idx, ing in enumerate(attrs["ingredients"])
              for _ in range(ing["count"])]
    for _restart in range(100):  # random sequential packing can jam; a fresh start is cheap
        placed: list[tuple[int, float, float, float, float]] = []
        for idx, r in pieces:
            for _try in range(100):
                rho, phi = (_INNER_R - r) * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
                x, y = 0.5 + rho * np.cos(phi), 0.5 + rho * np.sin(phi)
                if all((x - px) ** 2 + (y - py) ** 2 > (r + pr + 0.025) ** 2 for _, px, py, _, pr in placed):
                    placed.append((idx, float(x), float(y), float(rng.uniform(0, 180)), r))
                    break
            else:
                break
        if len(placed) == len(pieces):
            return [p[:4] for p in placed]
    raise RuntimeError(f"could not lay out {len(pieces)} pieces of {attrs['dish']}")  # never miscount silently


def _draw_piece(d: ImageDraw.ImageDraw, shape: str, rgb: tuple, cx: float, cy: float, r: float, angle: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "ring":  # slice with a pale centre (cucumber, egg, banana)
        d.ellipse(box, fill=rgb)
        centre = (245, 200, 30) if rgb == COLORS["white"] else tuple(min(255, c + 60) for c in rgb)
        d.ellipse((cx - r / 2.5, cy - r / 2.5, cx + r / 2.5, cy + r / 2.5), fill=centre)
    elif shape == "oval":
        d.ellipse((cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), fill=rgb)
    elif shape in ("stick", "triangle"):
        n = 4 if shape == "stick" else 3
        ang = np.deg2rad(angle) + (np.array([0.35, np.pi - 0.35, np.pi + 0.35, -0.35]) if n == 4 else
                                   np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]))
        d.polygon(list(zip((cx + r * np.cos(ang)).tolist(), (cy + r * np.sin(ang)).tolist())), fill=rgb)
    elif shape == "cap":  # mushroom: cap over a short stem
        d.rectangle((cx - r / 4, cy, cx + r / 4, cy + r), fill=(220, 210, 190))
        d.pieslice(box, 180, 360, fill=rgb)
    elif shape == "arc":
        d.arc(box, angle, angle + 220, fill=rgb, width=max(2, int(r / 2)))
    elif shape == "cluster":
        for dx, dy in ((-0.45, -0.3), (0.45, -0.3), (0.0, 0.35), (0.0, -0.5)):
            d.ellipse((cx + dx * r - r / 2, cy + dy * r - r / 2, cx + dx * r + r / 2, cy + dy * r + r / 2), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_food(attrs: dict[str, Any], size: int, rng: Rng) -> Image.Image:
    """Render a top view: textured table, plate or bowl, dish base, flat-coloured pieces."""
    table = np.array(_pick(rng, _TABLES), dtype=np.float32)
    arr = table + rng.normal(0.0, 8.0, size=(size, size, 1))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    rim = CONTAINER_COLORS[attrs["container_color"]]
    container, base, _ = DISHES[attrs["dish"]]
    outer = 0.44 if container == "plate" else 0.40
    d.ellipse(_box(size, 0.5 - outer, 0.5 - outer, 0.5 + outer, 0.5 + outer), fill=rim, outline=(60, 60, 60))
    inner = _INNER_R + 0.03
    shade = tuple(int(c * 0.85) for c in rim) if container == "bowl" else rim
    d.ellipse(_box(size, 0.5 - inner, 0.5 - inner, 0.5 + inner, 0.5 + inner), fill=base or shade)
    for idx, x, y, angle in layout_food(attrs, rng):
        ing = attrs["ingredients"][idx]
        _, shape, _, r = INGREDIENTS[ing["name"]]
        _draw_piece(d, shape, COLORS[ing["color"]], x * size, y * size, r * size, angle)
    return img


_FOOD_TEMPLATES = (
    "A {cc} {container} of {dish} with {items}, {total} pieces in total.",
    "{Dish} {prep} a {cc} {container}: {items} ({total} pieces).",
    "This {dish} contains {k} ingredients, {items}, {total} pieces in total, served {prep} a {cc} {container}.",
    "Top view of {a_dish} {dish} {prep} a {cc} {container}. It has {items}; {total} pieces altogether.",
)


def caption_food(attrs: dict[str, Any], rng: Rng) -> str:
    items = [
        f"{number_word(i['count'])} {i['color']} {i['name'] if i['count'] == 1 else INGREDIENTS[i['name']][0]}"
        for i in attrs["ingredients"]
    ]
    dish = attrs["dish"]
    return _pick(rng, _FOOD_TEMPLATES).format(
        dish=dish, Dish=dish.capitalize(), a_dish=_article(dish), container=attrs["container"],
        cc=attrs["container_color"], items=_join(items), total=number_word(attrs["count"]),
        k=number_word(len(items)), prep="on" if attrs["container"] == "plate" else "in",
    )


# ---------------------------------------------------------------------------------------------- writers
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
    ap = argparse.ArgumentParser(description="Write a seeded procedural image-caption set (AdaMLLM input format).")
    ap.add_argument("--domain", required=True, choices=sorted(DOMAINS))
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--n", type=int, default=64, help="number of images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate(args.domain, args.out, n=args.n, seed=args.seed, image_size=args.image_size)


if __name__ == "__main__":
    main()
