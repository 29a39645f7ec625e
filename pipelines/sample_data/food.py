"""Food sample domain: top views of a plate or bowl with countable, flat-coloured ingredient pieces.

Tables (colours, ingredients, dishes, containers, caption templates) live in `tables/food.yaml`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipelines.sample_data.common import Rng, article, box, join, load_table, number_word, pick, rgb

_T = load_table("food")
COLORS: dict[str, tuple[int, ...]] = {name: rgb(v) for name, v in _T["colors"].items()}
# name -> (plural, shape, colour options, radius as fraction of the image)
INGREDIENTS: dict[str, tuple[str, str, tuple[str, ...], float]] = {
    name: (v["plural"], v["shape"], tuple(v["colors"]), v["radius"]) for name, v in _T["ingredients"].items()
}
# dish -> (container, base fill RGB or None, allowed ingredients)
DISHES: dict[str, tuple[str, tuple[int, ...] | None, tuple[str, ...]]] = {
    name: (v["container"], rgb(v["base"]), tuple(v["ingredients"])) for name, v in _T["dishes"].items()
}
CONTAINER_COLORS: dict[str, tuple[int, ...]] = {name: rgb(v) for name, v in _T["container_colors"].items()}
_TABLES = tuple(rgb(v) for v in _T["tables"])
_TEMPLATES: tuple[str, ...] = tuple(_T["templates"])
_INNER_R, _MAX_PIECES = 0.30, 10


def sample_food(rng: Rng) -> dict[str, Any]:
    """Draw the ground truth of one food image (piece counts are final: the layout fits them)."""
    dish = pick(rng, list(DISHES))
    container, _, allowed = DISHES[dish]
    k = int(rng.integers(2, min(4, len(allowed)) + 1))
    names = [str(x) for x in rng.choice(allowed, size=k, replace=False)]
    counts = [int(c) for c in rng.integers(1, 5, size=k)]
    while sum(counts) > _MAX_PIECES:  # keep plates countable
        counts[int(np.argmax(counts))] -= 1
    ingredients = [{"name": nm, "color": pick(rng, INGREDIENTS[nm][2]), "count": c} for nm, c in zip(names, counts)]
    return {"dish": dish, "container": container, "container_color": pick(rng, list(CONTAINER_COLORS)),
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


def _draw_piece(d: ImageDraw.ImageDraw, shape: str, color: tuple, cx: float, cy: float, r: float, angle: float) -> None:
    bbox = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(bbox, fill=color)
    elif shape == "ring":  # slice with a pale centre (cucumber, egg, banana)
        d.ellipse(bbox, fill=color)
        centre = (245, 200, 30) if color == COLORS["white"] else tuple(min(255, c + 60) for c in color)
        d.ellipse((cx - r / 2.5, cy - r / 2.5, cx + r / 2.5, cy + r / 2.5), fill=centre)
    elif shape == "oval":
        d.ellipse((cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), fill=color)
    elif shape in ("stick", "triangle"):
        n = 4 if shape == "stick" else 3
        ang = np.deg2rad(angle) + (np.array([0.35, np.pi - 0.35, np.pi + 0.35, -0.35]) if n == 4 else
                                   np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]))
        d.polygon(list(zip((cx + r * np.cos(ang)).tolist(), (cy + r * np.sin(ang)).tolist())), fill=color)
    elif shape == "cap":  # mushroom: cap over a short stem
        d.rectangle((cx - r / 4, cy, cx + r / 4, cy + r), fill=(220, 210, 190))
        d.pieslice(bbox, 180, 360, fill=color)
    elif shape == "arc":
        d.arc(bbox, angle, angle + 220, fill=color, width=max(2, int(r / 2)))
    elif shape == "cluster":
        for dx, dy in ((-0.45, -0.3), (0.45, -0.3), (0.0, 0.35), (0.0, -0.5)):
            d.ellipse((cx + dx * r - r / 2, cy + dy * r - r / 2, cx + dx * r + r / 2, cy + dy * r + r / 2), fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_food(attrs: dict[str, Any], size: int, rng: Rng) -> Image.Image:
    """Render a top view: textured table, plate or bowl, dish base, flat-coloured pieces."""
    table = np.array(pick(rng, _TABLES), dtype=np.float32)
    arr = table + rng.normal(0.0, 8.0, size=(size, size, 1))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    rim = CONTAINER_COLORS[attrs["container_color"]]
    container, base, _ = DISHES[attrs["dish"]]
    outer = 0.44 if container == "plate" else 0.40
    d.ellipse(box(size, 0.5 - outer, 0.5 - outer, 0.5 + outer, 0.5 + outer), fill=rim, outline=(60, 60, 60))
    inner = _INNER_R + 0.03
    shade = tuple(int(c * 0.85) for c in rim) if container == "bowl" else rim
    d.ellipse(box(size, 0.5 - inner, 0.5 - inner, 0.5 + inner, 0.5 + inner), fill=base or shade)
    for idx, x, y, angle in layout_food(attrs, rng):
        ing = attrs["ingredients"][idx]
        _, shape, _, r = INGREDIENTS[ing["name"]]
        _draw_piece(d, shape, COLORS[ing["color"]], x * size, y * size, r * size, angle)
    return img


def caption_food(attrs: dict[str, Any], rng: Rng) -> str:
    """A caption that states dish, container and colour, and each ingredient's count and colour."""
    items = [
        f"{number_word(i['count'])} {i['color']} {i['name'] if i['count'] == 1 else INGREDIENTS[i['name']][0]}"
        for i in attrs["ingredients"]
    ]
    dish = attrs["dish"]
    return pick(rng, _TEMPLATES).format(
        dish=dish, Dish=dish.capitalize(), a_dish=article(dish), container=attrs["container"],
        cc=attrs["container_color"], items=join(items), total=number_word(attrs["count"]),
        k=number_word(len(items)), prep="on" if attrs["container"] == "plate" else "in",
    )
