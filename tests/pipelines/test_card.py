"""The dataset card: the YAML header the Hub's dataset viewer reads, the funnel, the features, citations, link.

References: the Hub's dataset card metadata (`configs[].data_files[].{split,path}`,
`dataset_info.{config_name,features,splits[].{name,num_examples}}`), parsed here with huggingface_hub's
own `DatasetCard`; the papers' arXiv ids 2411.19930 (AdaMLLM), 2603.19482 (instruction-free tuning),
2410.06456 (VITask).
"""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import yaml

from pipelines.card import project_url, render_card, split_sizes
from tests.pipelines.test_hub import out  # noqa: F401 - fixture

ARXIV_IDS = ("2411.19930", "2603.19482", "2410.06456")


def _meta_and_body(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    _, head, body = text.split("---\n", 2)
    return yaml.safe_load(head), body


def test_header_is_what_the_dataset_viewer_reads(out):  # noqa: F811
    from huggingface_hub import DatasetCard

    text = (out / "README.md").read_text()
    card = DatasetCard(text)  # the Hub client's parser accepts it
    meta, _ = _meta_and_body(text)
    assert card.data.to_dict()["configs"] == meta["configs"]
    # Every split pattern matches shards, and the sizes are the rows in those shards.
    rows = {}
    for d in meta["configs"][0]["data_files"]:
        files = sorted(out.glob(d["path"]))
        assert files
        rows[d["split"]] = sum(pq.read_metadata(f).num_rows for f in files)
    info = meta["dataset_info"]
    assert info["config_name"] == meta["configs"][0]["config_name"] == "default"
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == rows == {"train": 4}
    # The features are the shards' own columns, in order.
    shard = next((out / "data").glob("*.parquet"))
    assert [f["name"] for f in info["features"]] == pq.read_schema(shard).names
    assert meta["size_categories"] == ["n<1K"]


def test_body_has_the_funnel_features_and_citations(out):  # noqa: F811
    manifest = json.loads((out / "manifest.json").read_text())
    _, body = _meta_and_body((out / "README.md").read_text())
    funnel = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \|", body, flags=re.MULTILINE)
    assert {s: (int(i), int(o), int(r)) for s, i, o, r in funnel} == {
        s: (c["in"], c["out"], c["rejected"]) for s, c in manifest["stages"].items()}
    assert [s for s, *_ in funnel] == ["read", "ingest", "dedup"]  # pipeline order
    assert "| dedup | 5 | 4 | 1 | duplicate_id: 1 |" in body
    features = re.findall(r"^\| `(\w+)` \| `([^`]+)` \| (.+) \|$", body, flags=re.MULTILINE)
    shard = next((out / "data").glob("*.parquet"))
    assert [f[0] for f in features] == pq.read_schema(shard).names
    assert all(meaning.strip() for *_, meaning in features)  # every column explained
    assert {n: t for n, t, _ in features}["n_synthetic"] == "int32"
    bib = body.split("```bibtex\n", 1)[1].split("```", 1)[0]
    entries = re.findall(r"@article\{\w+,(.*?)\n\}", bib, flags=re.DOTALL)
    assert len(entries) == 3
    for arxiv, entry in zip(ARXIV_IDS, entries, strict=True):
        assert f"arXiv:{arxiv}" in entry
        assert {"title", "author", "journal", "year"} <= set(re.findall(r"^\s+(\w+)=\{", entry, flags=re.MULTILINE))
        assert entry.count("{") == entry.count("}")


def test_link_comes_from_project_urls_never_a_placeholder(out, tmp_path):  # noqa: F811
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = split_sizes(out, manifest)
    py = tmp_path / "pyproject.toml"
    py.write_text('[project]\nname = "vlm-adapt"\n'
                  '[project.urls]\nHomepage = "https://git.example.org/team/vlm-adapt"\n')
    url = project_url(py)
    assert url == "https://git.example.org/team/vlm-adapt"
    assert "Built by [vlm-adapt](https://git.example.org/team/vlm-adapt)" in render_card(manifest, sizes, url)
    py.write_text('[project]\nname = "vlm-adapt"\n')
    assert project_url(py) is None
    text = render_card(manifest, sizes, None)
    assert "Built by vlm-adapt" in text and "](https://github.com/)" not in text
    assert not re.search(r"\]\(https?://[^)]*\)", text.split("## Citation")[0])  # no link at all without a URL
