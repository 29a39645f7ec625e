"""A tiny evaluation set built from the procedural sample domain, so the whole eval path runs in CI.

`build_tiny_eval(out_dir)` generates biomed images with `pipelines.sample_data.generate` and asks
questions whose answers follow from each image's ground-truth attributes (modality, region,
findings, count). It writes them in the layouts the real loaders read:

    OUT/slake/test.json + OUT/slake/imgs/       SLAKE-like: open and closed (yes/no) questions
    OUT/pmc_vqa/test_clean.csv + OUT/pmc_vqa/images/   PMC-VQA-like: four-option multiple choice
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODALITIES = ("X-ray", "CT", "MRI", "ultrasound")
REGIONS = ("chest", "abdomen", "head", "knee", "hand")
KINDS = ("nodule", "mass", "opacity", "calcification", "cyst", "fracture line")
POSITIONS = ("upper left", "upper right", "center", "lower left", "lower right")


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" or word.startswith("X-") or word == "MRI" else "a"


def vqa_questions(attrs: dict[str, Any], rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, answer, 'OPEN' | 'CLOSED') pairs that the attributes answer."""
    kinds = sorted({f["kind"] for f in attrs["findings"]})
    out = [
        ("What imaging modality is used to take this image?", attrs["modality"], "OPEN"),
        ("Which part of the body is shown in this image?", attrs["region"], "OPEN"),
        ("What abnormality is seen in the image?", ", ".join(kinds) if kinds else "none", "OPEN"),
        ("Are there any abnormal findings in this image?", "Yes" if attrs["count"] else "No", "CLOSED"),
    ]
    kind = rng.choice(kinds) if kinds and rng.random() < 0.5 else rng.choice(KINDS)
    out.append((f"Is there {_article(kind)} {kind} in this image?", "Yes" if kind in kinds else "No", "CLOSED"))
    mod = attrs["modality"] if rng.random() < 0.5 else rng.choice(MODALITIES)
    out.append((f"Is this {_article(mod)} {mod} image?", "Yes" if mod == attrs["modality"] else "No", "CLOSED"))
    return out


def _options(truth: str, pool: tuple[str, ...] | list[str], rng: random.Random, k: int = 4) -> list[str]:
    others = [p for p in pool if p != truth]
    opts = [truth, *rng.sample(others, min(k - 1, len(others)))]
    rng.shuffle(opts)
    return opts


def choice_questions(attrs: dict[str, Any], rng: random.Random) -> list[tuple[str, list[str], str]]:
    """(question, options, correct option text) triples that the attributes answer."""
    out = [
        ("What imaging modality is shown in this image?", _options(attrs["modality"], MODALITIES, rng),
         attrs["modality"]),
        ("Which body region is shown?", _options(attrs["region"], REGIONS, rng), attrs["region"]),
        ("How many abnormal findings are visible?",
         _options(str(attrs["count"]), [str(i) for i in range(6)], rng), str(attrs["count"])),
    ]
    single = [f for f in attrs["findings"] if sum(g["kind"] == f["kind"] for g in attrs["findings"]) == 1]
    if single:
        f = rng.choice(single)
        out.append((f"Where is the {f['kind']} located?", _options(f["position"], POSITIONS, rng), f["position"]))
    return out


def build_tiny_eval(out_dir: str | Path, n: int = 8, seed: int = 0, domain: str = "biomed") -> dict[str, Path]:
    """Write the tiny SLAKE-like and PMC-VQA-like sets under `out_dir`; return {task: data path}."""
    from pipelines.sample_data import generate

    if domain != "biomed":
        raise ValueError(f"tiny eval sets exist for the 'biomed' domain only, not {domain!r}")
    out = Path(out_dir)
    sample = out / "sample"
    generate(domain, sample, n=n, seed=seed)
    metas = [json.loads(line) for line in (sample / "metadata.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    slake, pmc = out / "slake", out / "pmc_vqa"
    (slake / "imgs").mkdir(parents=True, exist_ok=True)
    (pmc / "images").mkdir(parents=True, exist_ok=True)
    entries, rows = [], []
    for i, m in enumerate(metas):
        name = Path(m["image"]).name
        shutil.copyfile(sample / m["image"], slake / "imgs" / name)
        shutil.copyfile(sample / m["image"], pmc / "images" / name)
        a = m["attributes"]
        for q, ans, kind in vqa_questions(a, rng):
            entries.append({"img_id": i, "img_name": name, "question": q, "answer": ans, "answer_type": kind,
                            "q_lang": "en", "modality": a["modality"], "location": a["region"],
                            "qid": len(entries)})
        for q, opts, truth in choice_questions(a, rng):
            row = {"index": len(rows), "Figure_path": name, "Question": q, "Answer": truth,
                   **{f"Choice {c}": f"{c}:{o}" for c, o in zip("ABCD", opts, strict=False)},
                   "Answer_label": "ABCD"[opts.index(truth)]}
            rows.append(row)
    (slake / "test.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    fields = ["index", "Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
              "Answer_label"]
    with open(pmc / "test_clean.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    log.info("tiny eval set: %d SLAKE-like and %d PMC-VQA-like questions in %s", len(entries), len(rows), out)
    return {"slake": slake, "pmc_vqa": pmc}
