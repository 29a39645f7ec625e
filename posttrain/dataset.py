"""Training rows as a map-style dataset (encode once to learn lengths, skip with reasons) and the
seeded length-grouped, resumable batch sampler."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

from posttrain.encoding import EncodeOptions, SkipExample, clean_messages, encode_example, row_images


def load_rows(data_files: Sequence[str], splits: Sequence[str] | None = None):
    """The Parquet dataset as a `datasets.Dataset`, optionally restricted to some `split` values."""
    import datasets

    ds = datasets.load_dataset("parquet", data_files=list(data_files), split="train")
    if splits is not None and "split" in ds.column_names:
        wanted = set(splits)
        ds = ds.filter(lambda s: s in wanted, input_columns="split")
    return ds


# -- dataset -------------------------------------------------------------------------------------


MessageTransform = Callable[[dict[str, Any], list[dict[str, Any]], int], list[dict[str, Any]]]


@dataclass
class SFTDataset(torch.utils.data.Dataset):
    """Map-style dataset over Parquet rows. A first pass encodes every row once to learn its length and
    whether it is usable; `__getitem__` encodes again (pixel tensors are not kept in memory).

    `transform(row, messages, epoch) -> messages` rewrites a conversation before encoding (response
    shuffling, instruction proxies); `image_transform(row, images) -> images` rewrites images.
    """

    rows: Any
    processor: Any
    opts: EncodeOptions
    transform: MessageTransform | None = None
    image_transform: Callable[[dict[str, Any], list[Image.Image]], list[Image.Image]] | None = None
    epoch: int = 0
    index: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(len(self.rows)):
            row = self.rows[i]
            try:
                ex = self._encode(row, epoch=0)
            except SkipExample as e:
                self.skipped.append({"id": str(row.get("id", i)), "reason": e.reason, "detail": e.detail})
                continue
            self.index.append(i)
            self.lengths.append(len(ex["input_ids"]))
        if self.skipped:
            reasons: dict[str, int] = {}
            for s in self.skipped:
                reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
            log.warning("skipped %d of %d examples: %s", len(self.skipped), len(self.rows), reasons)

    def skip_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s["reason"]] = out.get(s["reason"], 0) + 1
        return out

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _encode(self, row: dict[str, Any], epoch: int) -> dict[str, Any]:
        messages = clean_messages(row["messages"]) if row.get("messages") is not None else []
        if self.transform is not None:
            messages = self.transform(row, messages, epoch)
        images = row_images(row)
        if self.image_transform is not None:
            images = self.image_transform(row, images)
        ex = encode_example(self.processor, messages, images, self.opts)
        ex["id"] = str(row.get("id", ""))
        return ex

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._encode(self.rows[self.index[i]], self.epoch)


# -- batching ------------------------------------------------------------------------------------


class LengthGroupedBatchSampler:
    """Seeded batches of similar length: each epoch, shuffle, cut into mega-batches of
    `batch_size * mega_batch_mult`, sort each by length, chunk into batches and shuffle the batch order.

    `blocks` (lists of dataset positions) are sampled one after the other (two-stage curricula).
    Sharding for distributed training is by batch (`rank::world_size`); the list is wrapped around so
    every rank gets the same number of batches. `state_dict()` holds epoch and position for resume.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, group_by_length: bool = True,
                 mega_batch_mult: int = 16, blocks: Sequence[Sequence[int]] | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega = batch_size * mega_batch_mult
        self.blocks = [list(b) for b in blocks] if blocks is not None else [list(range(len(self.lengths)))]
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.position = 0  # batches of the current epoch already consumed on this rank

    def batches(self, epoch: int) -> list[list[int]]:
        out: list[list[int]] = []
        for b, block in enumerate(self.blocks):
            rng = random.Random(f"{self.seed}:{epoch}:{b}")
            idx = list(block)
            rng.shuffle(idx)
            chunks = []
            step = self.mega if self.group_by_length else self.batch_size
            for m in range(0, len(idx), step):
                mb = idx[m : m + step]
                if self.group_by_length:
                    mb.sort(key=lambda i: self.lengths[i], reverse=True)
                chunks += [mb[k : k + self.batch_size] for k in range(0, len(mb), self.batch_size)]
            rng.shuffle(chunks)
            out += chunks
        if self.world_size > 1:
            n = math.ceil(len(out) / self.world_size) * self.world_size
            out = (out * (n // max(len(out), 1) + 1))[:n]
            out = out[self.rank :: self.world_size]
        return out

    def __len__(self) -> int:
        return len(self.batches(0))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        while self.position < len(batches):
            b = batches[self.position]
            self.position += 1
            yield b

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
