"""Dataset card (OUT/README.md): YAML metadata the Hub reads, then what was run and what came out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.manifest import atomic_write_bytes

CITATIONS = """\
- AdaMLLM: *On Domain-Adaptive Post-Training for Multimodal Large Language Models*, arXiv:2411.19930.
- Instruction-free tuning with a momentum proxy instruction, arXiv:2603.19482.
- VITask: *From Generalist to Specialist: Adapting Vision Language Models via Task-Specific Visual Instruction Tuning*, arXiv:2410.06456.
"""


def _splits(manifest: dict[str, Any]) -> list[str]:
    return sorted({Path(p).name.split("-")[0] for p in manifest["parts"]["data"]})


def card_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    from pipelines.core.contract import DATASET_FEATURES

    cfg = manifest.get("config", {})
    splits = _splits(manifest) or ["train"]
    return {
        "license": cfg.get("hub", {}).get("license", "other"),
        "task_categories": ["image-text-to-text", "visual-question-answering"],
        "tags": ["vlm-adapt", "synthetic", "domain-adaptation", cfg.get("domain", "custom")],
        "configs": [
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}
        ],
        "dataset_info": {"features": DATASET_FEATURES._to_yaml_list()},
    }


def render_card(manifest: dict[str, Any]) -> str:
    cfg = manifest.get("config", {})
    stages = manifest.get("stages", {})
    rows = "\n".join(
        f"| {s} | {c['in']} | {c['out']} | {c['rejected']} | "
        + ", ".join(f"{r}: {n}" for r, n in sorted(c.get("rejected_by_reason", {}).items()))
        + " |"
        for s, c in stages.items()
    )
    synth, judge = cfg.get("synth", {}), cfg.get("judge", {})
    body = f"""# {cfg.get('domain', 'custom')} instruction tasks (vlm-adapt)

Built by [vlm-adapt](https://github.com/) from image-caption pairs: a visual instruction synthesizer
(`{synth.get('model')}`) wrote tasks with precise and informative answers, a text judge
(`{judge.get('model')}`) kept those whose precise answer follows from the informative one, and the
kept tasks were mixed with each image's caption task ({cfg.get('mix', {}).get('strategy')}).

## Stage counts

| stage | in | out | rejected | rejected by reason |
| --- | --- | --- | --- | --- |
{rows}

Config hash `{manifest.get('config_hash')}`; package versions and the full config are in `manifest.json`.

## Filter statistics

```json
{json.dumps(manifest.get('filter_stats', {}), indent=1)[:4000]}
```

## Methods

{CITATIONS}"""
    meta = yaml.safe_dump(card_metadata(manifest), sort_keys=False)
    return f"---\n{meta}---\n\n{body}"


def write_card(out: Path, manifest: dict[str, Any]) -> Path:
    path = out / "README.md"
    atomic_write_bytes(path, render_card(manifest).encode())
    return path
