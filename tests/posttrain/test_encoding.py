"""Encoding, assistant-only labels, truncation safety, length grouping and collation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from posttrain.collate import Collator
from posttrain.dataset import LengthGroupedBatchSampler, SFTDataset, load_rows
from posttrain.encoding import EncodeOptions, IGNORE_INDEX, SkipExample, clean_messages, encode_example
from pipelines.core.contract import messages, write_dataset


@pytest.fixture(scope="module")
def processor(tiny_vlm_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm_path)


def _decode_labels(processor, ex) -> str:
    ids = ex["input_ids"][ex["labels"] != IGNORE_INDEX]
    return processor.tokenizer.decode(ids)


def test_labels_cover_exactly_the_assistant_turns(processor):
    msgs = clean_messages(messages([("Describe the image.", "a red cell"), ("What color?", "red, blue")]))
    ex = encode_example(processor, msgs, [Image.new("RGB", (40, 30), "red")], EncodeOptions(max_length=512))
    trained = _decode_labels(processor, ex)
    assert "a red cell" in trained and "red, blue" in trained
    assert "Describe" not in trained and "What color" not in trained and "User" not in trained
    # labels equal the ids where set, and the image tokens are never labelled
    mask = ex["labels"] != IGNORE_INDEX
    assert torch.equal(ex["labels"][mask], ex["input_ids"][mask])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (ex["input_ids"] == image_id).sum() == 4 and not (mask & (ex["input_ids"] == image_id)).any()
    assert ex["pixel_values"].shape[:2] == (1, 1)


def test_too_long_inside_image_is_skipped_never_cut(processor):
    msgs = clean_messages(messages([("Describe the image.", "a red cell")]))
    with pytest.raises(SkipExample) as e:
        encode_example(processor, msgs, [Image.new("RGB", (32, 32))], EncodeOptions(max_length=8, truncate_final_turn=True))
    assert e.value.reason == "image_truncation"


def test_long_final_turn_truncated_only_when_configured(processor):
    long = " ".join(["tissue"] * 80)
    msgs = clean_messages(messages([("Describe the image.", long)]))
    img = [Image.new("RGB", (32, 32))]
    with pytest.raises(SkipExample) as e:
        encode_example(processor, msgs, img, EncodeOptions(max_length=40))
    assert e.value.reason == "too_long"
    ex = encode_example(processor, msgs, img, EncodeOptions(max_length=40, truncate_final_turn=True))
    assert len(ex["input_ids"]) == 40 and (ex["labels"] != IGNORE_INDEX).sum() > 10


def test_dataset_counts_skipped_examples(processor, tmp_path):
    img = Image.new("RGB", (32, 32), "blue")
    examples = [
        {"id": "ok", "images": [img], "messages": messages([("Describe the image.", "blue")])},
        {"id": "long", "images": [img], "messages": messages([("Describe the image.", "cell " * 200)])},
    ]
    write_dataset(str(tmp_path / "d.parquet"), examples)
    ds = SFTDataset(load_rows([str(tmp_path / "d.parquet")]), processor, EncodeOptions(max_length=64))
    assert len(ds) == 1 and ds[0]["id"] == "ok"
    assert ds.skipped == [{"id": "long", "reason": "too_long", "detail": ds.skipped[0]["detail"]}]
    assert ds.skip_counts() == {"too_long": 1}


def test_length_grouping_cuts_padding_and_is_seeded():
    lengths = [(i * 37) % 200 + 10 for i in range(256)]

    def pad(s):
        waste = total = 0
        for b in s.batches(0):
            L = max(lengths[i] for i in b)
            waste += sum(L - lengths[i] for i in b)
            total += L * len(b)
        return waste / total

    grouped = LengthGroupedBatchSampler(lengths, 8, seed=1)
    plain = LengthGroupedBatchSampler(lengths, 8, seed=1, group_by_length=False)
    assert pad(grouped) < 0.1 < pad(plain)
    assert grouped.batches(0) == LengthGroupedBatchSampler(lengths, 8, seed=1).batches(0)
    assert grouped.batches(0) != grouped.batches(1)
    assert sorted(i for b in grouped.batches(0) for i in b) == list(range(256))


def test_sampler_resume_and_sharding():
    lengths = list(range(40))
    s = LengthGroupedBatchSampler(lengths, 4, seed=3)
    it = iter(s)
    first = [next(it) for _ in range(3)]
    t = LengthGroupedBatchSampler(lengths, 4, seed=3)
    t.load_state_dict(s.state_dict())
    assert first + list(t) == s.batches(0)
    r0 = LengthGroupedBatchSampler(lengths, 4, seed=3, rank=0, world_size=3)
    r1 = LengthGroupedBatchSampler(lengths, 4, seed=3, rank=1, world_size=3)
    assert len(r0) == len(r1) == 4  # 10 batches wrapped to 12
    assert not {i for b in r0.batches(0)[:3] for i in b} & {i for b in r1.batches(0)[:3] for i in b}


def test_collator_pads_text_and_vision(processor):
    msgs_a = clean_messages(messages([("Describe the image.", "a")]))
    msgs_b = clean_messages(messages([("Describe the image.", "a long answer about the tissue")]))
    a = encode_example(processor, msgs_a, [Image.new("RGB", (32, 32))], EncodeOptions())
    b = encode_example(processor, msgs_b, [Image.new("RGB", (64, 16))], EncodeOptions())
    batch = Collator(pad_token_id=processor.tokenizer.pad_token_id)([a, b])
    L = len(b["input_ids"])
    assert batch["input_ids"].shape == (2, L)
    assert batch["attention_mask"][0].sum() == len(a["input_ids"])
    assert (batch["labels"][0, len(a["input_ids"]):] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape[0] == 2 and batch["pixel_values"].dim() == 5
