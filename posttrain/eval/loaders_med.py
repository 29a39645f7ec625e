"""Loaders for biomedical benchmarks in their published layouts.

SLAKE (Med-VQA JSON), VQA-RAD (JSON or HF Parquet), PathVQA (HF Parquet), PMC-VQA (CSV with
Choice A-D), attribute tables in the SKINCON / WBCAtt / CBIS-DDSM style (one multiple-choice
question per attribute), and MedMNIST `.npz` files with a label list (VITask classification).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

from posttrain.eval.examples import (
    Example,
    LoadResult,
    first_existing,
    image_bytes,
    iter_hf_rows,
    read_image_file,
    read_json,
)
from posttrain.eval.metrics import normalize

log = logging.getLogger(__name__)


def _closed_by_answer(answer: str) -> str:
    """Datasets without an answer_type: yes/no answers are closed, the rest open (PathVQA convention)."""
    return "closed" if normalize(answer) in ("yes", "no") else "open"


def load_slake(path: Path, split: str = "test", limit: int | None = None, lang: str = "en") -> LoadResult:
    """SLAKE: `<root>/<split>.json` entries {qid, img_name, question, answer, answer_type, q_lang}, images
    under `<root>/imgs/`. Questions in another language are recorded as rejects `other_language`."""
    path = Path(path)
    file = path if path.is_file() else path / f"{split}.json"
    root = file.parent
    img_root = root / "imgs" if (root / "imgs").is_dir() else root
    res = LoadResult()
    for i, e in enumerate(read_json(file)):
        if res.full(limit):
            break
        id_ = f"slake-{e.get('qid', i)}"
        if lang and e.get("q_lang", lang) != lang:
            res.reject(id_, "other_language", str(e.get("q_lang")))
            continue
        img = read_image_file(res, id_, img_root, str(e.get("img_name", "")))
        if img is None:
            continue
        kind = "closed" if str(e.get("answer_type", "")).strip().upper() == "CLOSED" else "open"
        res.add(Example(id_, img, str(e.get("question", "")), str(e.get("answer", "")).strip(), kind,
                        meta={"modality": e.get("modality"), "location": e.get("location")}))
    return res


def load_vqa_rad(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """VQA-RAD: the public JSON (`VQA_RAD Dataset Public.json`, images in `VQA_RAD Image Folder/`; the
    test split is phrase_type test_freeform/test_para) or the HF Parquet version (image/question/answer)."""
    path = Path(path)
    file = path if path.suffix == ".json" else first_existing(path, ["VQA_RAD Dataset Public.json", "vqa_rad.json"])
    if file is None:
        return _load_hf_vqa(path, split, limit, "vqa_rad")
    img_root = first_existing(file.parent, ["VQA_RAD Image Folder", "images"]) or file.parent
    res = LoadResult()
    for i, e in enumerate(read_json(file)):
        if res.full(limit):
            break
        if split and str(e.get("phrase_type", "")).startswith("test") != (split == "test"):
            continue  # the other split, not a failure
        id_ = f"vqa_rad-{e.get('qid', i)}"
        img = read_image_file(res, id_, img_root, str(e.get("image_name", "")))
        if img is None:
            continue
        kind = "closed" if str(e.get("answer_type", "")).strip().upper() == "CLOSED" else "open"
        res.add(Example(id_, img, str(e.get("question", "")), str(e.get("answer", "")).strip(), kind))
    return res


def load_pathvqa(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """PathVQA in the HF layout (flaviagiammarino/path-vqa): Parquet with image/question/answer;
    yes/no answers are the closed questions."""
    return _load_hf_vqa(Path(path), split, limit, "pathvqa")


def _load_hf_vqa(path: Path | str, split: str, limit: int | None, prefix: str) -> LoadResult:
    res = LoadResult()
    for i, row in enumerate(iter_hf_rows(path, split)):
        if res.full(limit):
            break
        id_ = f"{prefix}-{split}-{i}"
        img = image_bytes(row.get("image"))
        if img is None:
            res.reject(id_, "missing_image", "no bytes in image column")
            continue
        answer = str(row.get("answer", "")).strip()
        res.add(Example(id_, img, str(row.get("question", "")), answer, _closed_by_answer(answer)))
    return res


_CHOICE_PREFIX = re.compile(r"^\s*[A-Z]\s*[:.)]\s*")


def load_pmc_vqa(path: Path, split: str = "test", limit: int | None = None) -> LoadResult:
    """PMC-VQA: CSV (`test_clean.csv` / `test.csv` / `<split>.csv`) with Figure_path, Question,
    Choice A-D ("A:CT scan"), Answer (option text) and optionally Answer_label; images in `images/`."""
    path = Path(path)
    file = path if path.suffix == ".csv" else first_existing(path, [f"{split}_clean.csv", f"{split}.csv"])
    if file is None:
        raise FileNotFoundError(f"no {split}_clean.csv or {split}.csv in {path}")
    img_root = first_existing(file.parent, ["images", "figures"]) or file.parent
    res = LoadResult()
    with open(file, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if res.full(limit):
                break
            id_ = f"pmc_vqa-{row.get('index') or i}"
            choices = [_CHOICE_PREFIX.sub("", row.get(f"Choice {c}") or "").strip() for c in "ABCD"]
            choices = [c for c in choices if c]
            label = (row.get("Answer_label") or "").strip()
            answer = label if label else _CHOICE_PREFIX.sub("", row.get("Answer") or "").strip()
            letter = _letter(answer, choices)
            if letter is None:
                res.reject(id_, "answer_not_in_choices", f"{answer!r} vs {choices}")
                continue
            img = read_image_file(res, id_, img_root, (row.get("Figure_path") or "").strip())
            if img is None:
                continue
            res.add(Example(id_, img, (row.get("Question") or "").strip(), letter, "choice", choices))
    return res


def _letter(answer: str, choices: list[str]) -> str | None:
    if len(answer) == 1 and "A" <= answer.upper() < chr(ord("A") + len(choices)):
        return answer.upper()
    norm = [normalize(c) for c in choices]
    return chr(ord("A") + norm.index(normalize(answer))) if normalize(answer) in norm else None


_IMAGE_COLUMNS = ("image", "image_path", "path", "img", "file", "ImageID", "filename")


def load_attributes(
    path: Path,
    split: str = "test",
    limit: int | None = None,
    image_column: str | None = None,
    attributes: list[str] | None = None,
    max_options: int = 10,
) -> LoadResult:
    """Attribute tables (SKINCON / WBCAtt / CBIS-DDSM style): a CSV (`<split>.csv` or
    `attributes.csv`) with an image column and one column per attribute. Each (image, attribute)
    becomes a multiple-choice question whose options are the attribute's values in the file."""
    path = Path(path)
    file = path if path.suffix == ".csv" else first_existing(path, [f"{split}.csv", "attributes.csv"])
    if file is None:
        raise FileNotFoundError(f"no {split}.csv or attributes.csv in {path}")
    with open(file, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return LoadResult()
    cols = list(rows[0])
    img_col = image_column or next((c for c in _IMAGE_COLUMNS if c in cols), None)
    if img_col is None:
        raise ValueError(f"{file}: no image column among {cols}; pass image_column")
    skip = {img_col, "id", "split"}
    attrs = attributes or [c for c in cols if c not in skip]
    options = {a: sorted({(r.get(a) or "").strip() for r in rows} - {""}) for a in attrs}
    wide = [a for a in attrs if not 2 <= len(options[a]) <= max_options]
    if wide:
        log.info("attribute columns skipped (not 2..%d distinct values): %s", max_options, wide)
    res = LoadResult()
    for i, r in enumerate(rows):
        if "split" in r and r["split"] and r["split"] != split:
            continue
        rel = (r.get(img_col) or "").strip()
        if Path(rel).suffix == "":
            rel += ".png" if (file.parent / "images" / f"{rel}.png").exists() else ".jpg"
        base = file.parent / "images" if (file.parent / "images" / rel).exists() else file.parent
        img = None
        for a in attrs:
            if a in wide:
                continue
            if res.full(limit):
                return res
            id_ = f"attr-{r.get('id') or i}-{a}"
            img = img or read_image_file(res, id_, base, rel)
            if img is None:
                continue
            value = (r.get(a) or "").strip()
            letter = chr(ord("A") + options[a].index(value)) if value else ""
            question = f"What is the {a.replace('_', ' ')} in this image?"
            res.add(Example(id_, img, question, letter, "choice", options[a], meta={"attribute": a}))
    return res


def load_medmnist(
    path: Path, split: str = "test", limit: int | None = None, labels: list[str] | None = None
) -> LoadResult:
    """MedMNIST `.npz` (`<split>_images`, `<split>_labels`) with a label list: `labels` or a JSON
    beside the file (`labels.json` or `<name>_labels.json`, MedMNIST INFO style {"0": "adipose", ...})."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    file = path if path.suffix == ".npz" else next(iter(sorted(path.glob("*.npz"))), None)
    if file is None:
        raise FileNotFoundError(f"no .npz file in {path}")
    if labels is None:
        lf = first_existing(file.parent, [f"{file.stem}_labels.json", "labels.json"])
        if lf is None:
            raise FileNotFoundError(f"no label list for {file}: pass labels or add labels.json")
        raw = json.loads(lf.read_text())
        labels = [raw[k] for k in sorted(raw, key=int)] if isinstance(raw, dict) else list(raw)
    data = np.load(file)
    images, ys = data[f"{split}_images"], data[f"{split}_labels"].reshape(len(data[f"{split}_images"]), -1)
    res = LoadResult()
    for i in range(len(images)):
        if res.full(limit):
            break
        id_ = f"{file.stem}-{split}-{i}"
        if ys.shape[1] != 1 or not 0 <= int(ys[i, 0]) < len(labels):
            res.reject(id_, "bad_label", str(ys[i].tolist()))
            continue
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="PNG")
        res.add(Example(id_, buf.getvalue(), "What is the category of this image?", labels[int(ys[i, 0])],
                        "classification", list(labels)))
    return res
