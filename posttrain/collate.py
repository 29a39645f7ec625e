"""Batch collation for every model family: text right-padded, vision tensors padded and concatenated."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

from posttrain.encoding import IGNORE_INDEX, SEQUENCE_ALIGNED_KEYS, TEXT_KEYS


def _pad_to(t: torch.Tensor, shape: Sequence[int], value: float) -> torch.Tensor:
    if tuple(t.shape) == tuple(shape):
        return t
    out = t.new_full(tuple(shape), value)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


@dataclass
class Collator:
    """Right-pads text tensors; vision tensors are zero-padded in every dim but the first and concatenated
    along dim 0. One rule covers the families: Idefics3 ([1, n_img, 3, H, W] per example; all-zero padding
    images are dropped by the model), LLaVA ([n_img, 3, H, W]), Qwen2-VL (flat patches + image_grid_thw),
    Mllama (cross_attention_mask padded along the sequence)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        L = max(len(e["input_ids"]) for e in examples)
        batch: dict[str, Any] = {
            "input_ids": torch.stack([_pad_to(e["input_ids"], (L,), self.pad_token_id) for e in examples]),
            "labels": torch.stack([_pad_to(e["labels"], (L,), IGNORE_INDEX) for e in examples]),
            "attention_mask": torch.stack([_pad_to(e["attention_mask"], (L,), 0) for e in examples]),
        }
        keys = sorted({k for e in examples for k in e if k not in TEXT_KEYS and k != "id"})
        for k in keys:
            ts = [e[k] for e in examples if k in e]
            if k in SEQUENCE_ALIGNED_KEYS:
                ts = [_pad_to(t, (t.shape[0], L, *t.shape[2:]), 0) for t in ts]
            shape = [max(t.shape[d] for t in ts) for d in range(ts[0].dim())]
            batch[k] = torch.cat([_pad_to(t, (t.shape[0], *shape[1:]), 0) for t in ts], dim=0)
        batch["ids"] = [e.get("id", "") for e in examples]
        return batch


def padding_fraction(batch: dict[str, Any]) -> tuple[int, int]:
    """(real tokens, total token slots) of a collated batch."""
    mask = batch["attention_mask"]
    return int(mask.sum()), int(mask.numel())
