"""The miniature worlds: seeded, answers right by construction, judge labels right by construction,
data in the layouts the real code reads, and a base model that loads in transformers."""

from __future__ import annotations

import random

import numpy as np
import pytest

from filters.compose import states_conclusion
from filters.judge import check_template
from pipelines.experiments.miniworld import data, worlds
from pipelines.fixtures.sample_data import number_word, png_bytes


def test_general_items_are_seeded_and_independent():
    a1, img1, cap1 = worlds.make_general(5, seed=3)
    a2, img2, cap2 = worlds.make_general(5, seed=3)
    assert (a1, cap1, png_bytes(img1)) == (a2, cap2, png_bytes(img2))
    other = [worlds.make_general(i, seed=4)[2] for i in range(8)]
    assert other != [worlds.make_general(i, seed=3)[2] for i in range(8)]


@pytest.mark.parametrize("index", range(30))
def test_caption_states_the_attributes(index):
    attrs, img, cap = worlds.make_general(index, seed=1)
    assert img.size == (64, 64)
    low = cap.lower()
    assert attrs["style"] in low and attrs["scene"] in low
    if attrs["count"] == 0:
        assert "no objects" in low
    else:
        assert f"{number_word(attrs['count'])} object" in low
        for o in attrs["objects"]:
            assert f"{o['color']} {o['kind']}" in low and o["position"] in low and f"{o['size_cm']} cm" in low


def test_objects_are_drawn_where_the_caption_says():
    """A flat (drawing-style) object's colour is at its centre; without objects that colour may not appear."""
    found = 0
    for i in range(60):
        attrs, img, _ = worlds.make_general(i, seed=2)
        if attrs["style"] != "drawing":
            continue
        arr = np.asarray(img)
        for o in attrs["objects"]:
            if o["kind"] in ("ring",):  # hollow: the centre shows the background
                continue
            x, y = (int(c * 64) for c in o["center"])
            assert np.abs(arr[y, x].astype(int) - worlds.COLORS[o["color"]]).max() <= 2, (i, o)
            found += 1
    assert found > 5


@pytest.mark.parametrize("index", range(20))
def test_task_answers_follow_from_attributes(index):
    attrs, _, _ = worlds.make_general(index, seed=5)
    tasks = {t["instruction"]: t for t in worlds.general_tasks(attrs, random.Random(index))}
    assert tasks["What kind of image is this?"]["precise"] == attrs["style"]
    assert tasks["Which scene is shown in this image?"]["precise"] == attrs["scene"]
    assert tasks["How many objects are there?"]["precise"] == str(attrs["count"])
    assert tasks["Are there any objects in this image?"]["precise"] == ("Yes" if attrs["count"] else "No")
    for t in tasks.values():
        assert t["kind"] in ("open", "closed")
        assert states_conclusion(t["informative"], t["precise"]), t  # what the judge's "yes" means
        if t["instruction"].startswith("Where is the "):
            kind = t["instruction"].removeprefix("Where is the ").removesuffix(" located?")
            assert [o["position"] for o in attrs["objects"] if o["kind"] == kind] == [t["precise"]]


def test_judge_triplets_are_labelled_by_construction():
    triplets = data.judge_data(30)
    labels = {t["label"] for t in triplets}
    assert labels == {"yes", "no", "open"}
    for t in triplets:
        # yes: the informative answer concludes with the precise one; a contradiction (no) or an unrelated
        # informative answer (open) never states it
        assert states_conclusion(t["informative"], t["precise"]) == (t["label"] == "yes"), t


def test_judge_prompt_is_a_valid_template():
    check_template(data.judge_template(), "miniworld")


def test_choice_and_short_prompts_match_the_eval_templates():
    from posttrain.eval.tasks import TASKS

    assert worlds.short_prompt("Q?") == TASKS["slake"].render(_Ex("Q?", None))
    assert worlds.choice_prompt("Q?", ["a", "b", "c", "d"]) == TASKS["pmc_vqa"].render(_Ex("Q?", ["a", "b", "c", "d"]))


class _Ex:
    def __init__(self, question, choices):
        self.question, self.choices = question, choices


def test_training_data_layouts(tmp_path):
    from posttrain.dataset import load_rows

    pre = load_rows([str(data.write_pretrain_data(tmp_path / "pre.parquet", 6))])
    assert len(pre) == 6 and set(pre["split"]) == {"train"}
    msgs = pre[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 4
    assert msgs[0]["content"][0]["type"] == "image"
    seed = load_rows([str(data.write_seed_data(tmp_path / "seed.parquet", 5))])
    assert all(len(r["qa"]) == 2 and r["caption"] and len(r["images"]) == 1 for r in seed)


def test_fingerprint_changes_with_a_model_data_and_what_is_built_on_it(monkeypatch):
    from pipelines.experiments.miniworld import models

    def prints() -> dict[str, str]:
        models.fingerprint.cache_clear()
        return {n: models.fingerprint(n) for n in models.NAMES}

    before = prints()
    monkeypatch.setattr(models, "SYNTH_TUNE", dict(models.SYNTH_TUNE, epochs=4.0))
    after = prints()
    assert [n for n in models.NAMES if before[n] != after[n]] == ["synthesizer"]
    # a change in the general world's sampling reaches every model's data sample
    monkeypatch.setattr(worlds, "COUNT_P", (0.0, 0.0, 0.0, 1.0))
    assert all(prints()[n] != after[n] for n in ("generalist", "synthesizer", "judge"))
    models.fingerprint.cache_clear()


def test_domain_sets_have_disjoint_images(tmp_path):
    import json

    data.write_domain_captions(tmp_path / "cap", 6)
    val = data.write_domain_vqa(tmp_path / "val", 3, "val")
    test = data.write_domain_vqa(tmp_path / "test", 3, "test")
    caps = {json.loads(ln)["caption"] for ln in (tmp_path / "cap" / "metadata.jsonl").read_text().splitlines()}
    imgs = {
        split: {p.read_bytes() for p in (paths["slake"] / "imgs").iterdir()} for split, paths in
        (("val", val), ("test", test))
    }
    cap_imgs = {p.read_bytes() for p in (tmp_path / "cap" / "images").iterdir()}
    assert len(caps) == 6
    assert not imgs["val"] & imgs["test"] and not imgs["test"] & cap_imgs and not imgs["val"] & cap_imgs


def test_base_model_builds_small_and_loads(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pipelines.experiments.miniworld import models

    monkeypatch.setenv("VLM_ADAPT_CACHE", str(tmp_path))
    path = models.ensure("base")
    assert path.is_relative_to(tmp_path) and (path / "miniworld_build.json").is_file()
    model = AutoModelForImageTextToText.from_pretrained(path)
    proc = AutoProcessor.from_pretrained(path)
    tc = model.config.text_config
    assert tc.head_dim >= 32  # vLLM CPU attention
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert proc.image_seq_len == models.IMAGE_SEQ_LEN == 16
    attrs, img, cap = worlds.make_general(0)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = proc(text=text, images=[img], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        assert model(**enc).logits.shape[-1] == len(proc.tokenizer)
    # the tokenizer was trained on miniworld text: a domain caption stays short
    assert len(proc.tokenizer(cap)["input_ids"]) < 1.6 * len(cap.split())
    assert models.ensure("base") == path  # cached: second call builds nothing
