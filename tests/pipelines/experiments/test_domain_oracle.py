"""The domain side of the miniature world: ground-truth tasks (oracle) are right by the scan's metadata, the
grounding check agrees with the metadata, slot swaps keep answers right, and the oracle data set goes through
the pipeline's own compose and mix code."""

from __future__ import annotations

import json
import random
import re

import pyarrow.parquet as pq
import pytest

from filters.compose import states_conclusion
from pipelines.experiments.miniworld import data, domain, slots, worlds
from pipelines.fixtures.sample_data import make_item


def _scan(i: int, seed: int = 5) -> dict:
    return make_item("biomed", i, seed, image_size=32)[0]


@pytest.mark.parametrize("index", range(20))
def test_domain_tasks_are_true_of_the_scan_and_informative_answers_state_them(index):
    attrs = _scan(index)
    for t in domain.domain_tasks(attrs, random.Random(index)):
        assert states_conclusion(t["informative"], t["precise"]), t
        assert domain.grounded(t, attrs), t  # every ground-truth task passes the grounding check
        assert domain.asks_domain(t), t


def test_grounding_rejects_answers_the_scan_does_not_support():
    attrs = {"modality": "CT", "region": "head", "count": 1,
             "findings": [{"kind": "cyst", "size_mm": 12, "position": "center", "density": "low"}]}
    assert domain.grounded({"instruction": "What imaging modality is this?", "precise": "CT"}, attrs)
    assert not domain.grounded({"instruction": "What imaging modality is this?", "precise": "MRI"}, attrs)
    assert not domain.grounded({"instruction": "What kind of image is this?", "precise": "drawing"}, attrs)
    assert domain.grounded({"instruction": "Is there a cyst in this image?", "precise": "Yes"}, attrs)
    assert not domain.grounded({"instruction": "Is there a mass in this image?", "precise": "Yes"}, attrs)
    assert not domain.grounded({"instruction": "Is there a ball in this image?", "precise": "No"}, attrs)  # unsettled
    assert domain.grounded({"instruction": "How large is the cyst?", "precise": "12 mm"}, attrs)
    assert not domain.asks_domain({"instruction": "What objects are seen in the image?"})
    shares = domain.grounding([(attrs, [{"instruction": "Is this a CT?", "precise": "Yes"},
                                        {"instruction": "What colour is the ball?", "precise": "red"}]), (attrs, [])])
    assert shares == {"images": 2, "tasks": 2, "images_with_tasks": 1, "grounded": 0.5, "asks_domain": 0.5}


@pytest.mark.parametrize("seed", range(10))
def test_slot_swaps_are_consistent_and_keep_answers_right(seed):
    rng = random.Random(seed)
    attrs = worlds.make_general(seed, seed=7)[0]
    for t in worlds.general_tasks(attrs, random.Random(seed)):
        texts = {k: t[k] for k in ("instruction", "precise", "informative")}
        sub = slots.substitute(texts, rng)
        assert states_conclusion(sub["informative"], sub["precise"]), (texts, sub)
        pool = {w.lower() for w in slots.SWAP_POOL}
        found = {w.lower() for v in texts.values() for w in re.findall(r"[A-Za-z]+", v)} & pool
        kept = {w.lower() for v in sub.values() for w in re.findall(r"[A-Za-z]+", v)} & pool
        assert len(kept) == len(found)  # a bijection: distinct values stay distinct


def test_copy_rows_have_blank_images_and_answers_found_only_in_their_caption():
    rows = data.copy_rows(12, seed=3)
    assert len({r["images"][0]["bytes"] for r in rows}) == 1  # one blank image for all
    for r in rows:
        for qa in r["qa"]:
            if qa["precise"].lower() in {w.lower() for w in slots.SWAP_POOL}:
                assert qa["precise"].lower() in r["caption"].lower(), r


def test_held_out_judge_triplets_are_labelled_by_construction():
    sets = data.held_out_triplets(n_images=4)
    for name, triplets in sets.items():
        labels = {t["label"] for t in triplets}
        assert labels == {"yes", "no", "open"}, (name, labels)
        for t in triplets:
            assert states_conclusion(t["informative"], t["precise"]) == (t["label"] == "yes"), t
    assert any(domain.asks_domain(t) for t in sets["domain"])


def test_oracle_data_is_composed_and_mixed_by_the_pipeline_code(tmp_path):
    from pipelines.config import load_config
    from pipelines.core.rows import get_tasks
    from pipelines.experiments.method_check.oracle import oracle_rows, write_oracle_data

    input_json = data.write_domain_captions(tmp_path / "captions", 6)
    cfg = load_config("minimed")
    out = write_oracle_data(input_json, tmp_path / "oracle", cfg.mix, cfg.compose, tasks_per_image=2)
    rows = pq.read_table(next(out.glob("*.parquet"))).to_pylist()
    sources = oracle_rows(input_json, 2, seed=cfg.mix.seed)
    meta = [json.loads(x) for x in (tmp_path / "captions" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == len(sources) == 6
    for row, src, m in zip(rows, sources, meta, strict=True):
        turns = [(row["messages"][i]["content"][-1]["text"], row["messages"][i + 1]["content"][0]["text"])
                 for i in range(0, len(row["messages"]), 2)]
        assert row["task_kind"] == "mixed" and row["n_synthetic"] == 2 and len(turns) == 3
        assert ("Describe the image.", m["caption"]) in turns  # the caption task of the same image
        answers = dict(turns)
        for t in get_tasks(src):
            assert domain.grounded(t, m["attributes"]), t  # written from the ground truth
            assert states_conclusion(answers[t["instruction"]], t["precise"]), (t, answers)
