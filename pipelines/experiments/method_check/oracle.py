"""The `oracle` data set: domain tasks written from each caption image's ground truth (a perfect synthesizer
and judge), composed and mixed with the caption by the pipeline's own compose and mix code.

It is the ceiling the other conditions are read against: if a model trained on it does not beat the question
prior, the learner cannot learn the domain at this size, whatever the synthesizer writes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from filters.compose import ComposeStage
from filters.mix import build_records
from pipelines.core.contract import write_dataset
from pipelines.core.rows import set_tasks
from pipelines.experiments.miniworld.domain import domain_tasks


def oracle_rows(input_json: Path, tasks_per_image: int, seed: int = 0) -> list[dict[str, Any]]:
    """Pipeline-like rows (id, caption, user_prompt, tasks, image path, attributes) of a `generate` folder."""
    root = input_json.parent
    pairs = json.loads(input_json.read_text(encoding="utf-8"))
    meta = [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rng = random.Random(seed)
    rows = []
    for i, (pair, m) in enumerate(zip(pairs, meta, strict=True)):
        if pair["images"][0] != m["image"]:
            raise ValueError(f"{input_json}: record {i} names {pair['images'][0]}, metadata names {m['image']}")
        tasks = domain_tasks(m["attributes"], rng)
        picked = rng.sample(tasks, min(tasks_per_image, len(tasks)))
        row = {"id": f"oracle-{i:05d}", "caption": m["caption"], "user_prompt": pair["messages"][0]["content"],
               "image_path": str(root / m["image"]), "attributes": m["attributes"]}
        set_tasks(row, [{k: t[k] for k in ("instruction", "precise", "informative")} | {"label": "yes"}
                        for t in picked])
        rows.append(row)
    return rows


def write_oracle_data(input_json: Path, out_dir: Path, mix_cfg: Any, compose_cfg: Any, tasks_per_image: int) -> Path:
    """Compose and mix the oracle rows exactly as the pipeline's stages do; write one train part."""
    rows = oracle_rows(input_json, tasks_per_image, seed=mix_cfg.seed)
    ComposeStage(compose_cfg).process(rows)
    examples = []
    for row in rows:
        image = Path(row["image_path"]).read_bytes()
        for j, rec in enumerate(build_records(row, mix_cfg.strategy, mix_cfg.caption_position, mix_cfg.seed)):
            examples.append({"id": f"{row['id']}-{j}", "source_id": row["id"], "images": [image],
                             "messages": rec["messages"], "task_kind": rec["task_kind"], "split": rec["split"],
                             "n_synthetic": rec["n_synthetic"], "judge_scores": [1.0] * rec["n_synthetic"],
                             "domain": "minimed"})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_dataset(out_dir / "train-00000.parquet", examples)
    return out_dir
