"""Biomed sample domain: grayscale scans (X-ray, CT, MRI, ultrasound) with countable findings.

Tables (modalities, regions, finding kinds, grey levels, caption templates) live in `tables/biomed.yaml`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipelines.sample_data.common import POSITIONS, Rng, article, box, join, load_table, number_word, pick

_T = load_table("biomed")
MODALITY_REGIONS: dict[str, tuple[str, ...]] = {m: tuple(r) for m, r in _T["modality_regions"].items()}
REGION_FOV_MM: dict[str, int] = dict(_T["region_fov_mm"])  # image width in mm
REGION_KINDS: dict[str, tuple[str, ...]] = {r: tuple(k) for r, k in _T["region_kinds"].items()}
# kind -> (size range as fraction of the field of view, allowed densities)
BIOMED_KINDS: dict[str, tuple[tuple[float, float], tuple[str, ...]]] = {
    k: (tuple(v["size"]), tuple(v["densities"])) for k, v in _T["kinds"].items()
}
_PALETTE: dict[str, dict[str, float]] = _T["palette"]
_MODALITY_REGION_PAIRS = [(m, r) for m, regions in MODALITY_REGIONS.items() for r in regions]
_FINDING_COUNTS = tuple(_T["finding_counts"])
_FINDING_COUNT_P = tuple(_T["finding_counts"].values())
_TEMPLATES: tuple[str, ...] = tuple(_T["templates"])
_NORMAL: tuple[str, ...] = tuple(_T["normal_templates"])


def sample_biomed(rng: Rng) -> dict[str, Any]:
    """Draw the ground truth of one biomed image."""
    modality, region = pick(rng, _MODALITY_REGION_PAIRS)
    count = int(rng.choice(_FINDING_COUNTS, p=_FINDING_COUNT_P))
    fov = REGION_FOV_MM[region]
    findings = []
    for pos in rng.choice(list(POSITIONS), size=count, replace=False):
        kind = pick(rng, REGION_KINDS[region])
        (lo, hi), densities = BIOMED_KINDS[kind]
        ax, ay = POSITIONS[str(pos)]
        findings.append({
            "kind": kind,
            "size_mm": int(round(rng.uniform(lo, hi) * fov)),
            "position": str(pos),
            "density": pick(rng, densities),
            "center": [round(ax + rng.uniform(-0.04, 0.04), 3), round(ay + rng.uniform(-0.04, 0.04), 3)],
        })
    return {"modality": modality, "region": region, "count": count, "findings": findings}


def _draw_region(d: ImageDraw.ImageDraw, region: str, s: int, p: dict) -> None:
    """Anatomy outline in grey levels of the palette (coordinates are fractions of the image)."""
    body, bone, air = p["body"], p["bone"], p["air"]
    if region == "chest":
        d.ellipse(box(s, 0.06, 0.05, 0.94, 0.98), fill=body)
        for x0 in (0.16, 0.54):
            d.ellipse(box(s, x0, 0.14, x0 + 0.30, 0.86), fill=air)
        for k in range(6):  # ribs
            y = 0.2 + 0.1 * k
            d.arc(box(s, 0.12, y, 0.88, y + 0.25), 200, 340, fill=bone, width=max(1, s // 64))
        d.rectangle(box(s, 0.47, 0.05, 0.53, 0.95), fill=bone)
        d.ellipse(box(s, 0.44, 0.5, 0.7, 0.82), fill=body)
    elif region == "abdomen":
        d.ellipse(box(s, 0.05, 0.12, 0.95, 0.9), fill=body)
        d.ellipse(box(s, 0.12, 0.22, 0.48, 0.6), fill=min(255, body + 20))  # liver
        for x0 in (0.24, 0.64):
            d.ellipse(box(s, x0, 0.52, x0 + 0.12, 0.7), fill=max(0, body - 25))  # kidneys
        d.ellipse(box(s, 0.43, 0.66, 0.57, 0.8), fill=bone)  # vertebra
    elif region == "head":
        d.ellipse(box(s, 0.12, 0.06, 0.88, 0.94), fill=bone)
        d.ellipse(box(s, 0.16, 0.1, 0.84, 0.9), fill=body)
        for x0 in (0.4, 0.53):
            d.ellipse(box(s, x0, 0.36, x0 + 0.07, 0.6), fill=air)  # ventricles
    elif region == "knee":
        d.rectangle(box(s, 0.18, 0.0, 0.82, 1.0), fill=body)
        d.rectangle(box(s, 0.36, 0.0, 0.64, 0.4), fill=bone)  # femur
        d.ellipse(box(s, 0.28, 0.3, 0.72, 0.5), fill=bone)
        d.rectangle(box(s, 0.32, 0.53, 0.68, 1.0), fill=bone)  # tibia
    elif region == "hand":
        d.rounded_rectangle(box(s, 0.25, 0.45, 0.75, 0.95), radius=s // 10, fill=body)
        for k, x0 in enumerate((0.26, 0.36, 0.46, 0.56, 0.66)):
            top = 0.08 + 0.05 * abs(2 - k)
            d.rounded_rectangle(box(s, x0, top, x0 + 0.08, 0.55), radius=s // 40, fill=body)
            d.rectangle(box(s, x0 + 0.03, top + 0.03, x0 + 0.05, 0.8), fill=bone)
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
    ImageDraw.Draw(m).pieslice(box(size, -0.55, -1.15, 1.55, 0.95), 55, 125, fill=1)
    return np.asarray(m, dtype=np.float32)


def _finding_phrase(f: dict, variant: int) -> str:
    size, dens = f"{f['size_mm']} mm", f"{f['density']}-density"
    core = f"{size} {dens} {f['kind']}" if variant == 0 else f"{dens} {f['kind']} measuring {size}"
    return f"{article(core)} {core} in the {f['position']}"


def caption_biomed(attrs: dict[str, Any], rng: Rng) -> str:
    """A caption that states modality, region, the number of findings and each finding's attributes."""
    m, region, n = attrs["modality"], attrs["region"], attrs["count"]
    fields = {"modality": m, "Modality": m[0].upper() + m[1:], "region": region, "Region": region.capitalize(),
              "a_modality": article(m)}
    if n == 0:
        return pick(rng, _NORMAL).format(**fields)
    phrases = [_finding_phrase(f, int(rng.integers(2))) for f in attrs["findings"]]
    counted = f"{number_word(n)} finding{'s' if n > 1 else ''}"
    joined = join(phrases)
    sentences = " ".join(f"There is {p}." for p in phrases)
    return pick(rng, _TEMPLATES).format(
        counted=counted, findings=joined, Findings=joined[0].upper() + joined[1:], sentences=sentences, **fields
    )
