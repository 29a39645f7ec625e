"""VITask data: single-turn examples from dataset rows, rejects with reasons, CRT negatives, collation."""

from __future__ import annotations

import torch
from PIL import Image

from posttrain.encoding import EncodeOptions, IGNORE_INDEX
from pipelines.core.contract import messages
from posttrain.vitask_data import VITaskCollator, VITaskDataset, find_negatives, pad_token_id, single_turn_examples

INSTR = "Is this scan normal or abnormal?"


def image(v: int, size: int = 40) -> Image.Image:
    return Image.new("RGB", (size, size), (v, 255 - v, (3 * v) % 256))


def rows(n: int = 4) -> list[dict]:
    """Dataset-layout rows: dark images are 'normal', bright ones 'abnormal'; all share the instruction."""
    return [{"id": f"r{i}", "images": [image(20 + 200 * (i % 2) + i)],
             "messages": messages([(INSTR, "abnormal" if i % 2 else "normal")])} for i in range(n)]


def test_find_negatives_same_instruction_other_response_seeded():
    instr = ["q1", "q1", "q1", "q2", "q2", "q3"]
    resp = ["a", "a", "b", "x", "x", "z"]
    neg = find_negatives(instr, resp, seed=0)
    # Only one candidate each in group q1 (2 <-> {0, 1}), none in q2 (same answers) or q3 (alone).
    assert neg[:2] == [2, 2] and neg[2] in (0, 1) and neg[3:] == [None, None, None]
    for i, j in enumerate(neg):
        if j is not None:
            assert instr[j] == instr[i] and resp[j] != resp[i]
    assert find_negatives(instr, resp, seed=0) == neg  # seeded: repeats
    # Case and surrounding space do not make a response "different".
    assert find_negatives(["q", "q"], ["Normal", " normal "]) == [None, None]


def test_find_negatives_sampling_covers_every_candidate():
    instr, resp = ["q"] * 5, ["a", "b", "c", "d", "a"]
    drawn = {find_negatives(instr, resp, seed=0, epoch=e)[0] for e in range(60)}
    assert drawn == {1, 2, 3}  # uniform over the other-answer samples; never 0 or 4 (same answer "a")


def test_single_turn_examples_split_turns_and_reject_with_reasons():
    bad = [
        {"id": "noimg", "images": [], "messages": messages([(INSTR, "normal")], n_images=0)},
        {"id": "two", "images": [image(1), image(2)], "messages": messages([(INSTR, "normal")])},
        {"id": "noturn", "images": [image(3)], "messages": messages([(INSTR, "x")])[:1]},
        {"id": "noresp", "images": [image(4)], "messages": messages([(INSTR, "  ")])},
        {"id": "noinstr", "images": [image(5)], "messages": messages([("", "normal")])},
        {"id": "multi", "images": [image(6)], "messages": messages([(INSTR, "normal"), ("Colour?", "red")])},
    ]
    labelled = rows(2)
    labelled[1]["label"] = "abnormal"  # a class-label column travels with the example when the dataset has one
    turns, rejects = single_turn_examples(labelled + bad)
    assert [t.label for t in turns[:2]] == ["", "abnormal"]
    assert [(t.id, t.row, t.instruction, t.response) for t in turns] == [
        ("r0", 0, INSTR, "normal"), ("r1", 1, INSTR, "abnormal"),
        ("multi#t0", 7, INSTR, "normal"), ("multi#t1", 7, "Colour?", "red"),
    ]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "noimg": "missing_image", "two": "multiple_images", "noturn": "no_turns", "noresp": "empty_response",
        "noinstr": "empty_instruction",
    }
    assert all(r["stage"] == "vitask" for r in rejects)


def test_dataset_records_encoder_skips_and_labels_only_the_response(processor):
    long = {"id": "long", "images": [image(7)], "messages": messages([(INSTR, "normal " * 40)])}
    junk = {"id": "junk", "images": [{"bytes": b"not an image", "path": None}],
            "messages": messages([(INSTR, "normal")])}
    noimg = {"id": "noimg", "images": [], "messages": messages([(INSTR, "normal")], n_images=0)}
    ds = VITaskDataset(rows(3) + [long, junk, noimg], processor, EncodeOptions(max_length=48))
    assert [t.id for t in ds.turns] == ["r0", "r1", "r2"] and len(ds) == len(ds.lengths) == 3
    assert sorted((r["id"], r["reason"]) for r in ds.rejects) == [
        ("junk", "unreadable_image"), ("long", "too_long"), ("noimg", "missing_image")]
    assert ds.negatives == [1, 2, 1] and ds.n_without_negative == 0
    item = ds[0]
    ex = item["example"]
    trained = processor.tokenizer.decode(ex["input_ids"][ex["labels"] != IGNORE_INDEX])
    assert trained.strip() == "normal<end_of_utterance>"
    # The negative: the same tokens and labels, with the other image's pixels.
    neg = item["negative"]
    assert torch.equal(neg["labels"], ex["labels"]) and not torch.equal(neg["pixel_values"], ex["pixel_values"])
    ds.with_negatives = False
    assert ds[0]["negative"] is None


def test_collator_builds_positive_negative_and_tsm_pixels(processor, tsm):
    lonely = {"id": "lonely", "images": [image(99)], "messages": messages([("Other question?", "x")])}
    ds = VITaskDataset(rows(3) + [lonely], processor, EncodeOptions(max_length=256))
    vb = VITaskCollator(pad_token_id(processor), tsm)([ds[i] for i in range(4)])
    pos = vb.positive
    assert pos.ids == ["r0", "r1", "r2", "lonely"] and pos.input_ids.shape == pos.labels.shape
    assert pos.tsm_pixels.shape == (4, 3, 32, 32)
    # Padding is masked out of attention and labels alike.
    assert bool(((pos.attention_mask == 0) <= (pos.labels == IGNORE_INDEX)).all())
    assert vb.negative_rows == [0, 1, 2] and vb.negative.input_ids.shape[0] == 3
    assert set(pos.vision_inputs()) == {"pixel_values", "pixel_attention_mask"}
