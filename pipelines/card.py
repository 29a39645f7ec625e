"""Dataset card (OUT/README.md): YAML metadata the Hub's dataset viewer reads, then what was run and what came out.

The header carries `configs` (which shards make which split) and `dataset_info` (the features and each
split's size), so the viewer shows the Parquet shards with their types. The body has the stage funnel,
the features, the methods with their BibTeX (`templates/citations.bib`) and the project's link, taken
from `[project.urls]` of pyproject.toml or the installed package's metadata; with neither the card names
the project without a link rather than pointing at a placeholder.
"""

from __future__ import annotations

import json
import tomllib
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.files import atomic_write_bytes
from pipelines.manifest import STAGE_ORDER

PROJECT = "vlm-adapt"
URL_KEYS = ("Homepage", "Repository", "Source")  # first one present wins
METHODS = (
    "AdaMLLM domain task synthesis and consistency filter (Cheng et al., arXiv:2411.19930)",
    "instruction-free tuning with a momentum proxy instruction (Kang et al., arXiv:2603.19482)",
    "VITask task-specific visual instruction tuning (Bai et al., arXiv:2410.06456)",
)
FEATURE_DOCS = {
    "id": "stable id of the source image-caption pair (its own id, else a content hash)",
    "source_id": "where the pair came from: `<file>#<index>` or `<tar>#<key>`",
    "images": "the image, normalized to RGB PNG",
    "messages": "the conversation: user turns with an image part, assistant turns with the answer",
    "task_kind": "`caption`, `synthetic`, `mixed` (caption and synthesized tasks in one conversation), "
    "or `general` (mixed-in general data)",
    "split": "`train` (single stage), or `stage1` (captions) / `stage2` (synthesized tasks) of a two-stage export",
    "n_synthetic": "number of synthesized tasks in the conversation",
    "judge_scores": "the consistency judge's score of each synthesized task",
    "domain": "the domain the dataset was built for",
}


def project_url(pyproject: Path | None = None) -> str | None:
    """The project's link from `[project.urls]` (source checkout) or the installed metadata, else None."""
    path = pyproject or Path(__file__).resolve().parents[1] / "pyproject.toml"
    urls: dict[str, str] = {}
    if path.is_file():
        project = tomllib.loads(path.read_text()).get("project", {})
        if project.get("name") == PROJECT:
            urls = project.get("urls", {})
    elif pyproject is None:
        try:  # "Homepage, https://..." entries of an installed wheel
            entries = metadata.metadata(PROJECT).get_all("Project-URL") or []
        except metadata.PackageNotFoundError:
            entries = []
        urls = dict(tuple(s.strip() for s in e.split(",", 1)) for e in entries if "," in e)
    return next((urls[k] for k in URL_KEYS if urls.get(k, "").startswith("https://")), None)


def citations() -> str:
    """BibTeX of the three papers the methods come from."""
    return resources.files("pipelines.templates").joinpath("citations.bib").read_text(encoding="utf-8").strip()


def split_sizes(out: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Rows per split of the committed data shards (`<split>-<seq>-<tag>.parquet`), from Parquet footers."""
    import pyarrow.parquet as pq

    sizes: dict[str, int] = {}
    for p in manifest["parts"]["data"]:
        split = Path(p).name.split("-")[0]
        sizes[split] = sizes.get(split, 0) + pq.ParquetFile(out / p).metadata.num_rows
    return dict(sorted(sizes.items()))


def _size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for n examples."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "n>10M"


def card_metadata(manifest: dict[str, Any], sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """The YAML header: license, tags, `configs` (split -> shard pattern) and `dataset_info` (features, splits)."""
    from pipelines.core.contract import DATASET_FEATURES

    cfg = manifest.get("config", {})
    splits = sorted(sizes) if sizes else sorted({Path(p).name.split("-")[0] for p in manifest["parts"]["data"]})
    splits = splits or ["train"]
    info: dict[str, Any] = {"config_name": "default", "features": DATASET_FEATURES._to_yaml_list()}
    if sizes:
        info["splits"] = [{"name": s, "num_examples": n} for s, n in sizes.items()]
    meta = {
        "pretty_name": f"{cfg.get('domain', 'custom')} instruction tasks ({PROJECT})",
        "license": cfg.get("hub", {}).get("license", "other"),
        "task_categories": ["image-text-to-text", "visual-question-answering"],
        "tags": [PROJECT, "synthetic", "domain-adaptation", cfg.get("domain", "custom")],
        "configs": [
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}
        ],
        "dataset_info": info,
    }
    if sizes:
        meta["size_categories"] = [_size_category(sum(sizes.values()))]
    return meta


def _type_name(entry: dict[str, Any]) -> str:
    """A feature's type as written in the YAML (`dtype`, `list`, or a struct of named fields)."""
    if "dtype" in entry:
        return entry["dtype"] if isinstance(entry["dtype"], str) else "struct"
    inner = entry["list"]
    if isinstance(inner, str):
        return f"list<{inner}>"
    return "list<{" + ", ".join(f"{f['name']}: {_type_name(f)}" for f in inner) + "}>"


def _funnel(stages: dict[str, Any]) -> str:
    order = list(STAGE_ORDER) + sorted(set(stages) - set(STAGE_ORDER))
    return "\n".join(
        f"| {s} | {c['in']} | {c['out']} | {c['rejected']} | "
        + ", ".join(f"{r}: {n}" for r, n in sorted(c.get("rejected_by_reason", {}).items()))
        + " |"
        for s in order if (c := stages.get(s))
    )


def render_card(manifest: dict[str, Any], sizes: dict[str, int] | None = None, url: str | None = None) -> str:
    from pipelines.core.contract import DATASET_FEATURES

    cfg = manifest.get("config", {})
    synth, judge = cfg.get("synth", {}), cfg.get("judge", {})
    version = manifest.get("versions", {}).get(PROJECT, "")
    project = f"[{PROJECT}]({url})" if url else f"{PROJECT}"
    features = "\n".join(
        f"| `{e['name']}` | `{_type_name(e)}` | {FEATURE_DOCS.get(e['name'], '')} |"
        for e in DATASET_FEATURES._to_yaml_list()
    )
    split_line = ", ".join(f"{s}: {n}" for s, n in (sizes or {}).items())
    split_par = f"\nRows per split: {split_line}.\n" if split_line else ""
    built_by = f"{project} {version}" if version else project
    methods = "\n".join(f"- {m}" for m in METHODS)
    body = f"""# {cfg.get('domain', 'custom')} instruction tasks ({PROJECT})

Built by {built_by} from image-caption pairs: a visual instruction synthesizer
(`{synth.get('model')}`) wrote tasks with precise and informative answers, a text judge
(`{judge.get('model')}`) kept those whose precise answer follows from the informative one, and the
kept tasks were mixed with each image's caption task ({cfg.get('mix', {}).get('strategy')}).
{split_par}
## Stage funnel

What each stage took in, passed on and rejected (rows for read, ingest, synth, mix and dedup; tasks for
judge and compose). Rejected rows stay in the local `rejects/` folder with their stage and reason.

| stage | in | out | rejected | rejected by reason |
| --- | --- | --- | --- | --- |
{_funnel(manifest.get('stages', {}))}

Config hash `{manifest.get('config_hash')}`; package versions and the full config are in `manifest.json`.

## Features

| name | type | meaning |
| --- | --- | --- |
{features}

## Filter statistics

```json
{json.dumps(manifest.get('filter_stats', {}), indent=1)[:4000]}
```

## Methods

{methods}

## Citation

```bibtex
{citations()}
```
"""
    meta = yaml.safe_dump(card_metadata(manifest, sizes), sort_keys=False)
    return f"---\n{meta}---\n\n{body}"


def write_card(out: Path, manifest: dict[str, Any]) -> Path:
    path = out / "README.md"
    atomic_write_bytes(path, render_card(manifest, split_sizes(out, manifest), project_url()).encode())
    return path
