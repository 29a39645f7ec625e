"""Loaders for food benchmarks in their published layouts.

Recipe1M (layer1.json + layer2.json + partition image tree; recipe generation, ROUGE-L),
Nutrition5K (dish metadata CSV + overhead RGB images; ingredient set recall), Food101 (meta/ +
images/; classification among the class names), FoodSeg103 (img_dir / ann_dir masks +
category_id.txt; multi-label F1).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from posttrain.eval.examples import Example, LoadResult, read_image_file, read_json

RECIPE_QUESTION = "Generate the recipe of the dish in this image: its title, ingredients and instructions."


def format_recipe(title: str, ingredients: list[str], instructions: list[str]) -> str:
    return f"{title}\nIngredients: {', '.join(ingredients)}\nInstructions: {' '.join(instructions)}"


def load_recipe1m(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """Recipe1M: `layer1.json` [{id, title, ingredients: [{text}], instructions: [{text}], partition}],
    `layer2.json` [{id, images: [{id}]}]; images at `<partition>/<c0>/<c1>/<c2>/<c3>/<image id>`."""
    path = Path(path)
    layer1 = read_json(path / "layer1.json")
    images = {e["id"]: [im["id"] for im in e.get("images", [])] for e in read_json(path / "layer2.json")}
    res = LoadResult()
    for e in layer1:
        if res.full(limit):
            break
        if e.get("partition", split) != split:
            continue
        id_ = f"recipe1m-{e['id']}"
        ims = images.get(e["id"])
        if not ims:
            res.reject(id_, "missing_image", "recipe has no image in layer2")
            continue
        name = ims[0]
        img = read_image_file(res, id_, path, "/".join([split, *name[:4], name]))
        if img is None:
            continue
        answer = format_recipe(
            e.get("title", "").strip(),
            [i["text"].strip() for i in e.get("ingredients", [])],
            [s["text"].strip() for s in e.get("instructions", [])],
        )
        res.add(Example(id_, img, RECIPE_QUESTION, answer if e.get("title") else "", "generation"))
    return res


def load_nutrition5k(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """Nutrition5K: `metadata/dish_metadata_cafe{1,2}.csv` rows `dish_id, 5 totals, then per ingredient
    (id, name, grams, calories, fat, carb, protein)`; images `imagery/realsense_overhead/<dish>/rgb.png`;
    split ids in `dish_ids/splits/rgb_<split>_ids.txt` (all dishes when absent)."""
    path = Path(path)
    split_file = path / "dish_ids" / "splits" / f"rgb_{split}_ids.txt"
    wanted = set(split_file.read_text().split()) if split_file.exists() else None
    res = LoadResult()
    for meta in sorted((path / "metadata").glob("dish_metadata_cafe*.csv")):
        with open(meta, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if res.full(limit):
                    return res
                if not row or (wanted is not None and row[0] not in wanted):
                    continue
                dish = row[0].strip()
                names: list[str] = []
                for j in range(6, len(row) - 1, 7):
                    n = row[j + 1].strip()
                    if n and n not in names:
                        names.append(n)
                id_ = f"nutrition5k-{dish}"
                img = read_image_file(res, id_, path, f"imagery/realsense_overhead/{dish}/rgb.png")
                if img is None:
                    continue
                res.add(Example(id_, img, "List the ingredients of the dish in this image.", names, "set"))
    return res


def load_food101(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """Food101: `meta/classes.txt` (+ `meta/labels.txt` display names), `meta/<split>.txt` lines
    `class/image_id`, images `images/<class>/<image_id>.jpg`. Options: every class name."""
    path = Path(path)
    classes = (path / "meta" / "classes.txt").read_text().split()
    labels_file = path / "meta" / "labels.txt"
    names = [n.strip() for n in labels_file.read_text().splitlines() if n.strip()] if labels_file.exists() else []
    if len(names) != len(classes):
        names = [c.replace("_", " ") for c in classes]
    label_of = dict(zip(classes, names, strict=True))
    res = LoadResult()
    for line in (path / "meta" / f"{split}.txt").read_text().split():
        if res.full(limit):
            break
        cls = line.split("/")[0]
        id_ = f"food101-{line.replace('/', '-')}"
        if cls not in label_of:
            res.reject(id_, "unknown_label", cls)
            continue
        img = read_image_file(res, id_, path / "images", f"{line}.jpg")
        if img is None:
            continue
        res.add(Example(id_, img, "What type of food is shown in this image?", label_of[cls], "classification", names))
    return res


def load_foodseg103(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """FoodSeg103: `category_id.txt` ("<id>\\t<name>", 0 = background), images
    `Images/img_dir/<split>/<name>.jpg`, masks `Images/ann_dir/<split>/<name>.png` (pixel = category).
    The reference is the set of categories present in the mask."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    root = path / "FoodSeg103" if (path / "FoodSeg103").is_dir() else path
    cats: dict[int, str] = {}
    for line in (root / "category_id.txt").read_text().splitlines():
        if line.strip():
            k, name = line.split(maxsplit=1)
            cats[int(k)] = name.strip()
    vocab = [cats[k] for k in sorted(cats) if k != 0]
    res = LoadResult()
    for img_path in sorted((root / "Images" / "img_dir" / split).glob("*.jpg")):
        if res.full(limit):
            break
        id_ = f"foodseg103-{img_path.stem}"
        mask_rel = f"{img_path.stem}.png"
        mask = read_image_file(res, id_, root / "Images" / "ann_dir" / split, mask_rel)
        if mask is None:
            continue
        present = np.unique(np.asarray(Image.open(io.BytesIO(mask))))
        unknown = [int(v) for v in present if int(v) not in cats]
        if unknown:
            res.reject(id_, "unknown_label", f"mask values {unknown}")
            continue
        answer = [cats[int(v)] for v in present if int(v) != 0]
        res.add(Example(id_, img_path.read_bytes(), "List the food items in this image.", answer, "multilabel", vocab))
    return res
