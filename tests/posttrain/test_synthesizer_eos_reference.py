"""Synthesizer tuning target, token by token, against bigai-ai/QA-Synthesizer llava/train/train.py
`preprocess_llama3` with `syn_mode` set: the conversation is rendered and `tokenizer.eos_token` is appended;
the first round (system, caption question, caption) is ignored, every later token is a target, and
`cur_len += 1` keeps the loss on that final EOS.
"""

from __future__ import annotations

import torch
from PIL import Image

from posttrain.config import TrainConfig
from posttrain.encoding import EncodeOptions, IGNORE_INDEX, encode_example
from posttrain.synthesizer_tuning import SynthesizerTuningRecipe, synthesizer_messages

QA = [{"instruction": "What color is the cell?", "precise": "red", "informative": "The cell is red."}]


def recipe_options() -> EncodeOptions:
    """The encode options the synthesizer recipe really uses (no model is loaded)."""
    r = object.__new__(SynthesizerTuningRecipe)
    r.cfg = TrainConfig(model="unused", method="synthesizer", max_length=2048)
    return r.encode_options()


def reference_labels(processor, messages, image) -> tuple[list[int], list[int]]:
    """Reference target: ids of render(conversation) + EOS; IGNORE on the caption round, ids after it."""
    tok = processor.tokenizer
    text = processor.apply_chat_template(messages, tokenize=False) + tok.eos_token
    ids = list(processor(text=[text], images=[[image]], add_special_tokens=False)["input_ids"][0])
    first_round = processor.apply_chat_template(messages[:2], tokenize=False)
    k = len(processor(text=[first_round], images=[[image]], add_special_tokens=False)["input_ids"][0])
    return ids, [IGNORE_INDEX] * k + ids[k:]


def test_synthesizer_target_ends_with_a_trained_eos(processor):
    image = Image.new("RGB", (32, 32), "red")
    msgs = synthesizer_messages("zebra caption red cell", QA, seed="s0")
    opts = recipe_options()
    assert opts.append_eos and opts.train_after_turn == 1
    ex = encode_example(processor, msgs, [image], opts)
    ids, labels = reference_labels(processor, msgs, image)
    assert ex["input_ids"].tolist() == ids
    assert ex["labels"].tolist() == labels  # token by token
    eos = processor.tokenizer.eos_token_id
    assert ids[-1] == eos and labels[-1] == eos  # the appended EOS is a target
    assert int((ex["labels"] == IGNORE_INDEX).sum()) < len(ids) - 1


def test_plain_sft_target_has_no_appended_eos(processor):
    image = Image.new("RGB", (32, 32), "red")
    msgs = synthesizer_messages("zebra caption red cell", QA, seed="s0")
    plain = encode_example(processor, msgs, [image], EncodeOptions(max_length=2048, train_after_turn=1))
    tuned = encode_example(processor, msgs, [image], recipe_options())
    assert len(tuned["input_ids"]) == len(plain["input_ids"]) + 1
    assert torch.equal(tuned["input_ids"][:-1], plain["input_ids"])
    assert torch.equal(tuned["labels"][:-1], plain["labels"])
