"""VITask evaluation hooks: greedy answers of the plain VLM (no TSM, no connector: the deployment setting)
and the incomplete-instruction variants of the paper's robustness comparison."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from posttrain.vitask_data import single_turn


@torch.no_grad()
def generate_without_tsm(model: nn.Module, processor: Any, images: Sequence[Image.Image],
                         instructions: Sequence[str], *, max_new_tokens: int = 32) -> list[str]:
    """Greedy answers of the plain VLM: no TSM, no connector (VITask's deployment setting)."""
    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"  # generation continues from the end of every row
    try:
        prompts = [processor.apply_chat_template(single_turn(ins), add_generation_prompt=True) for ins in instructions]
        enc = processor(text=prompts, images=[[im.convert("RGB")] for im in images], padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    enc = {k: v.to(model.device) for k, v in enc.items()}
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return [t.strip() for t in processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)]


_SENTENCE = re.compile(r"(?<=[.?!\n])\s+")
_DANGLING = re.compile(r"\b(as|among|from|between|of|options|choices|either)\s*:?\s*(?=[.?!]?$)", re.IGNORECASE)


def _drop_label_span(sentence: str, labels: Sequence[str]) -> str | None:
    """Remove the span from the first to the last label named in a sentence; None when it names < 2 labels."""
    spans = []
    for lab in labels:
        spans += [m.span() for m in re.finditer(rf"(?<!\w){re.escape(lab)}(?!\w)", sentence, flags=re.IGNORECASE)]
    if len({sentence[a:b].casefold() for a, b in spans}) < 2:
        return None
    start, end = min(a for a, _ in spans), max(b for _, b in spans)
    head = re.sub(r"\(?\b[A-Za-z0-9]\)\s*$", "", sentence[:start])  # an option marker "(A) " before the list
    text = head.rstrip(" ,;:(") + " " + sentence[end:].lstrip(" ,;:)")
    text = re.sub(r"\s+([.?!,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()
    text = re.sub(r"\s+([.?!])$", r"\1", _DANGLING.sub("", text)).strip()
    return text if len(re.findall(r"\w+", text)) >= 2 else ""


def incomplete_instruction_variants(instruction: str, label_list: Sequence[str]) -> dict[str, str]:
    """Degraded instructions for the robustness comparison (keys are stable; a variant may equal "full").

    full: unchanged; no_label_list: in every sentence naming two or more labels, the span from the first to
    the last label is cut (the sentence goes when under two words remain); first_sentence: only the first
    sentence; no_last_sentence: the final sentence dropped.
    """
    sentences = [s for s in _SENTENCE.split(instruction.strip()) if s]
    labels = [lab for lab in label_list if lab]
    kept = []
    for sentence in sentences:
        cut = _drop_label_span(sentence, labels)
        if cut is None:
            kept.append(sentence)
        elif cut:
            kept.append(cut)
    return {
        "full": instruction,
        "no_label_list": " ".join(kept),
        "first_sentence": sentences[0] if sentences else instruction,
        "no_last_sentence": " ".join(sentences[:-1]) if len(sentences) > 1 else instruction,
    }
