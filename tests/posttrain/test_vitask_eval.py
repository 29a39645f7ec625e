"""VITask eval hooks: plain-model generation (no TSM) and incomplete-instruction variants."""

from __future__ import annotations

import torch

from posttrain.vitask_eval import generate_without_tsm, incomplete_instruction_variants
from tests.posttrain.test_vitask_data import INSTR, image


def test_generate_without_tsm_matches_plain_greedy(tiny_vlm_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_path).eval()
    processor = AutoProcessor.from_pretrained(tiny_vlm_path)
    side = processor.tokenizer.padding_side
    images, questions = [image(10), image(230, size=56)], [INSTR, "What is shown?"]
    got = generate_without_tsm(model, processor, images, questions, max_new_tokens=4)
    assert len(got) == 2 and all(isinstance(t, str) for t in got)
    # Batched left-padded generation equals one-by-one generation.
    single = [generate_without_tsm(model, processor, [im], [q], max_new_tokens=4)[0]
              for im, q in zip(images, questions, strict=True)]
    assert got == single
    assert processor.tokenizer.padding_side == side  # restored


def test_incomplete_instruction_variants():
    labels = ["normal", "abnormal", "benign tumour"]
    v = incomplete_instruction_variants("Look at the scan. Is it normal or abnormal? Answer with one word.", labels)
    assert v["full"] == "Look at the scan. Is it normal or abnormal? Answer with one word."
    assert v["no_label_list"] == "Look at the scan. Is it? Answer with one word."
    assert v["first_sentence"] == "Look at the scan."
    assert v["no_last_sentence"] == "Look at the scan. Is it normal or abnormal?"
    assert incomplete_instruction_variants("Classify this image as normal, abnormal or benign tumour.", labels)[
        "no_label_list"] == "Classify this image."
    assert incomplete_instruction_variants("Options: normal, abnormal. Which one fits?", labels)[
        "no_label_list"] == "Which one fits?"
    # One label named is not a label list: kept as is.
    assert incomplete_instruction_variants("Is the tissue normal? Describe it.", labels)[
        "no_label_list"] == "Is the tissue normal? Describe it."
