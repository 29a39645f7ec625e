"""Data sets of the method check, written in the layouts the real code reads.

- pre-training data (general world): one conversation per image in the dataset contract
  (`pipelines.core.contract.write_dataset`): the caption turn, short-answer tasks and one multiple-choice task,
  user turns in the eval's prompt layouts, so the generalist follows those instructions.
- synthesizer seed data (general world): `id, images, caption, qa[{instruction, precise, informative}]`,
  the layout `posttrain.synthesizer_tuning` reads.
- judge triplets (general world), labelled by construction (`worlds.judge_triplets`).
- domain captions: `pipelines.fixtures.sample_data.generate("biomed", ...)` (AdaMLLM input format), captions only.
- domain VQA sets: `pipelines.fixtures.tiny_eval.build_tiny_eval` (SLAKE-like open/closed + PMC-VQA-like
  multiple choice), one seed for the validation split and another for the held-out test split.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.experiments.miniworld import worlds
from pipelines.fixtures.sample_data import make_item, png_bytes

CAPTION_PROMPT = "Describe the image."
# Seeds of disjoint item streams (item i of a seed never equals item i of another).
GENERAL_SEED, SEED_DATA_SEED, JUDGE_SEED, COPY_SEED, COPY_PROBE_SEED = 11, 12, 13, 14, 15
DOMAIN_TRAIN_SEED, DOMAIN_VAL_SEED, DOMAIN_TEST_SEED = 0, 21, 22


def judge_template() -> str:
    from filters.judge import check_template

    text = judge_prompt_path().read_text(encoding="utf-8")
    check_template(text, "miniworld judge")
    return text.rstrip()


def judge_prompt_path() -> Path:
    return Path(str(resources.files("pipelines.experiments.miniworld") / "judge_prompt.txt"))


def tokenizer_corpus() -> list[str]:
    """Text the BPE tokenizer is trained on: general and domain captions, tasks, and prompt wording."""
    from pipelines.fixtures.tiny_eval import choice_questions, vqa_questions

    from posttrain.synthesizer_tuning import CAPTION_HINT, INFORMATIVE_HINT, PRECISE_HINT

    lines = [CAPTION_HINT, INFORMATIVE_HINT, PRECISE_HINT, worlds.SHORT_SUFFIX, worlds.CHOICE_SUFFIX,
             "A. B. C. D."]
    # repeated so BPE merges " Yes", " No", " Open": the judge then decides with a single token
    lines += ["Label: Yes", "Label: No", "Label: Open"] * 3
    rng = random.Random(0)
    for i in range(300):
        attrs, _, cap = worlds.make_general(i, seed=GENERAL_SEED)
        lines.append(cap)
        for t in worlds.general_tasks(attrs, rng):
            lines += [t["instruction"], t["informative"], t["precise"]]
        dattrs, _, dcap = make_item("biomed", i, DOMAIN_TRAIN_SEED, image_size=32)
        lines.append(dcap)
        # question wording only (validation seed; never the test items)
        lines += [q for q, _, _ in vqa_questions(dattrs, rng)] + [q for q, _, _ in choice_questions(dattrs, rng)]
    return lines


def _img_struct(img) -> list[dict[str, Any]]:
    return [{"bytes": png_bytes(img), "path": None}]


def pretrain_examples(n: int) -> list[dict[str, Any]]:
    """General-world conversations for pre-training the generalist (dataset-contract rows, PIL images)."""
    from pipelines.core.contract import messages

    rng = random.Random(GENERAL_SEED)
    examples = []
    for i in range(n):
        attrs, img, cap = worlds.make_general(i, seed=GENERAL_SEED)
        tasks = rng.sample(worlds.general_tasks(attrs, rng), 2)
        q, opts, truth = rng.choice(worlds.general_choice_tasks(attrs, rng))
        turns = [(CAPTION_PROMPT, cap), *[(worlds.short_prompt(t["instruction"]), t["precise"]) for t in tasks],
                 (worlds.choice_prompt(q, opts), "ABCD"[opts.index(truth)])]
        first = turns.pop(rng.randrange(len(turns)))  # which turn comes first varies, so none is tied to the image
        examples.append({"id": f"general-{i}", "images": [img], "messages": messages([first, *turns]),
                         "task_kind": "general", "split": "train"})
    return examples


def write_pretrain_data(path: Path, n: int) -> Path:
    from pipelines.core.contract import write_dataset

    write_dataset(str(path), pretrain_examples(n))
    return path


def seed_rows(n: int, tasks_per_image: int = 2) -> list[dict[str, Any]]:
    """General seed data for synthesizer tuning: caption + precise/informative answers to `tasks_per_image`
    questions of each of n general images."""
    rng = random.Random(SEED_DATA_SEED)
    rows = []
    for i in range(n):
        attrs, img, cap = worlds.make_general(i, seed=SEED_DATA_SEED)
        tasks = rng.sample(worlds.general_tasks(attrs, rng), tasks_per_image)
        rows.append({"id": f"seed-{i}", "images": _img_struct(img), "caption": cap,
                     "qa": [{k: t[k] for k in ("instruction", "precise", "informative")} for t in tasks]})
    return rows


def copy_rows(n: int, tasks_per_image: int = 2, seed: int = COPY_SEED) -> list[dict[str, Any]]:
    """Caption-only seed rows for learning to read the caption: general captions and tasks whose attribute
    words are swapped at random within each row (`slots.substitute`), on a blank image, so the caption is
    the only way to the answers."""
    from PIL import Image

    from pipelines.experiments.miniworld.slots import substitute

    rng = random.Random(seed)
    blank = _img_struct(Image.new("RGB", (64, 64), "white"))
    rows = []
    for i in range(n):
        attrs, _, cap = worlds.make_general(i, seed=seed)
        tasks = rng.sample(worlds.general_tasks(attrs, rng), tasks_per_image)
        texts = {"caption": cap, **{f"{k}{j}": t[k] for j, t in enumerate(tasks)
                                    for k in ("instruction", "precise", "informative")}}
        sub = substitute(texts, rng)
        rows.append({"id": f"copy-{seed}-{i}", "images": blank, "caption": sub["caption"],
                     "qa": [{k: sub[f"{k}{j}"] for k in ("instruction", "precise", "informative")}
                            for j in range(len(tasks))]})
    return rows


def write_seed_data(path: Path, n: int, tasks_per_image: int = 2, n_copy: int = 0) -> Path:
    """`seed_rows` (+ `n_copy` `copy_rows`) as Parquet in the layout `posttrain.synthesizer_tuning` reads."""
    qa = pa.struct([("instruction", pa.string()), ("precise", pa.string()), ("informative", pa.string())])
    schema = pa.schema([("id", pa.string()),
                        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
                        ("caption", pa.string()), ("qa", pa.list_(qa))])
    rows = seed_rows(n, tasks_per_image) + (copy_rows(n_copy, tasks_per_image) if n_copy else [])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return path


def digest(obj: Any) -> str:
    """sha256 of a JSON rendering of data rows (images as PNG bytes)."""
    import hashlib

    from PIL import Image

    def default(o: Any) -> str:
        return png_bytes(o).hex() if isinstance(o, Image.Image) else o.hex() if isinstance(o, bytes) else repr(o)

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()


def judge_data(n: int, swap_fraction: float = 0.0) -> list[dict[str, str]]:
    """Labelled triplets from n general images (each paired with the next for contradictions); a seeded
    `swap_fraction` of them has its attribute words swapped (`slots.substitute`), so matching the precise
    answer against the informative one, not knowing which words go together, is what decides the label."""
    from pipelines.experiments.miniworld.slots import substitute

    rng = random.Random(JUDGE_SEED)
    items = [worlds.make_general(i, seed=JUDGE_SEED)[0] for i in range(n + 1)]
    out = []
    for i in range(n):
        out += worlds.judge_triplets(items[i], items[i + 1], rng)
    if swap_fraction:
        swap_rng = random.Random(JUDGE_SEED + 1)
        keys = ("instruction", "informative", "precise")
        out = [{**t, **substitute({k: t[k] for k in keys}, swap_rng)} if swap_rng.random() < swap_fraction else t
               for t in out]
    return out


def held_out_triplets(n_images: int = 6, seed: int = 99) -> dict[str, list[dict[str, str]]]:
    """Labelled triplets the judge never trained on: general-world ones (another seed) and domain-like ones
    (`domain_tasks` on scans of the same held-out seed), built the same way as its training triplets."""
    from pipelines.experiments.miniworld.domain import domain_tasks

    rng = random.Random(seed)
    general = [worlds.make_general(i, seed=seed)[0] for i in range(n_images + 1)]
    scans = [make_item("biomed", i, seed, image_size=32)[0] for i in range(n_images + 1)]
    return {"general": [t for i in range(n_images) for t in worlds.judge_triplets(general[i], general[i + 1], rng)],
            "domain": [t for i in range(n_images)
                       for t in worlds.judge_triplets(scans[i], scans[i + 1], rng, tasks_fn=domain_tasks)]}


def write_domain_captions(out_dir: Path, n: int) -> Path:
    """Domain images with captions only (the adaptation input); returns image_caption_pairs.json."""
    from pipelines.fixtures.sample_data import generate

    return generate("biomed", out_dir, n=n, seed=DOMAIN_TRAIN_SEED)


def write_domain_vqa(out_dir: Path, n: int, split: str) -> dict[str, Path]:
    """Domain VQA set ('val' or 'test' seed): {task: data path} for `slake` and `pmc_vqa`."""
    from pipelines.fixtures.tiny_eval import build_tiny_eval

    seed = {"val": DOMAIN_VAL_SEED, "test": DOMAIN_TEST_SEED}[split]
    return build_tiny_eval(out_dir, n=n, seed=seed)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
