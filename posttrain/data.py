"""Training data: Parquet rows -> token ids, assistant-only labels, vision tensors, length-grouped batches.

Rows follow the dataset contract (`id`, `images`, `messages`, `task_kind`, `split`). An example is encoded
with the model's own processor and chat template. Label spans are found by *rendering prefixes*: the
token count of `messages[:i]` rendered with a generation prompt is where assistant turn `i` starts, and
the count of `messages[:i+1]` is where it ends. Prefixes are tokenized with the plain tokenizer (cheap)
and shifted by the number of tokens the processor adds when it expands image placeholders, which is a
constant per example because images sit only in the first user turn. No token id is hard-coded.

Examples that cannot be used are never dropped silently: `encode_example` raises `SkipExample` with a
reason (`image_truncation`, `too_long`, `no_labels`, `unreadable_image`), and `SFTDataset` records every
skipped id with its reason in `skipped`.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
TEXT_KEYS = ("input_ids", "labels", "attention_mask")
# Vision tensors whose dim 1 runs along the token sequence (padded/truncated with the text).
SEQUENCE_ALIGNED_KEYS = ("cross_attention_mask", "mm_token_type_ids")


class SkipExample(Exception):
    """An example that cannot be trained on; `reason` is a short snake_case word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- rows ----------------------------------------------------------------------------------------


def load_rows(data_files: Sequence[str], splits: Sequence[str] | None = None):
    """The Parquet dataset as a `datasets.Dataset`, optionally restricted to some `split` values."""
    import datasets

    ds = datasets.load_dataset("parquet", data_files=list(data_files), split="train")
    if splits is not None and "split" in ds.column_names:
        wanted = set(splits)
        ds = ds.filter(lambda s: s in wanted, input_columns="split")
    return ds


def row_images(row: dict[str, Any]) -> list[Image.Image]:
    """Decoded RGB images of a row (HF Image features decode to PIL, raw structs hold PNG bytes)."""
    out = []
    for im in row.get("images") or []:
        if isinstance(im, dict):
            data = im.get("bytes")
            if data is None and im.get("path"):
                with open(im["path"], "rb") as f:
                    data = f.read()
            try:
                im = Image.open(io.BytesIO(data))
                im.load()
            except Exception as e:  # noqa: BLE001 - any decoder failure marks the example
                raise SkipExample("unreadable_image", str(e)) from None
        out.append(im.convert("RGB"))
    return out


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow gives content items as {type, text} structs with text=None for images; chat templates
    expect {"type": "image"} without a text key."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        items = []
        for c in content:
            if c["type"] == "image":
                items.append({"type": "image"})
            else:
                items.append({"type": "text", "text": c.get("text") or ""})
        out.append({"role": m["role"], "content": items})
    return out


# -- encoding ------------------------------------------------------------------------------------


@dataclass
class EncodeOptions:
    max_length: int = 4096
    truncate_final_turn: bool = False  # cut a long final assistant turn (text only) instead of skipping
    train_after_turn: int | None = None  # label every token after message k (synthesizer tuning), not just assistants


def _render(processor: Any, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _count(tok: Any, text: str, full_ids: list[int]) -> int:
    """Tokens of `text` as a prefix of the full sequence (longest common prefix if merges differ)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = 0
    for a, b in zip(ids, full_ids, strict=False):
        if a != b:
            break
        n += 1
    return n


def label_spans(processor: Any, messages: list[dict[str, Any]], train_after_turn: int | None = None
                ) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the trained token spans, in plain-tokenizer coordinates (before image expansion)."""
    tok = _tokenizer(processor)
    full = _render(processor, messages, generation_prompt=False)
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    spans = []
    if train_after_turn is not None:
        start = _count(tok, _render(processor, messages[: train_after_turn + 1], generation_prompt=False), full_ids)
        spans.append((start, len(full_ids)))
    else:
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = _count(tok, _render(processor, messages[:i], generation_prompt=True), full_ids)
            end = _count(tok, _render(processor, messages[: i + 1], generation_prompt=False), full_ids)
            if end > start:
                spans.append((start, end))
    return full, spans


def encode_example(processor: Any, messages: list[dict[str, Any]], images: list[Image.Image],
                   opts: EncodeOptions) -> dict[str, torch.Tensor]:
    """One example -> {input_ids, labels, attention_mask: [L]} + the processor's vision tensors (batch dim kept)."""
    full, spans = label_spans(processor, messages, opts.train_after_turn)
    tok = _tokenizer(processor)
    n_plain = len(tok(full, add_special_tokens=False)["input_ids"])
    kwargs: dict[str, Any] = {"text": [full], "return_tensors": "pt", "add_special_tokens": False}
    if images:
        kwargs["images"] = [images]
    enc = processor(**kwargs)
    ids = enc["input_ids"][0]
    shift = len(ids) - n_plain  # tokens added by image expansion, all before the first assistant turn
    labels = torch.full_like(ids, IGNORE_INDEX)
    for s, e in spans:
        labels[s + shift : e + shift] = ids[s + shift : e + shift]
    if not (labels != IGNORE_INDEX).any():
        raise SkipExample("no_labels", "no assistant tokens")
    out = {"input_ids": ids, "labels": labels, "attention_mask": enc["attention_mask"][0]}
    for k, v in enc.items():
        if k not in out and isinstance(v, torch.Tensor):
            out[k] = v
    if len(ids) > opts.max_length:
        out = _truncate(out, spans[-1][0] + shift, processor, opts)
    return out


def _image_token_ids(processor: Any) -> set[int]:
    tok = _tokenizer(processor)
    ids = set()
    for name in ("image_token", "fake_image_token", "global_image_token", "boi_token", "eoi_token"):
        t = getattr(processor, name, None) or getattr(tok, name, None)
        if isinstance(t, str):
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i != tok.unk_token_id:
                ids.add(i)
    for attr in ("image_token_id", "image_token_index"):
        i = getattr(processor, attr, None)
        if isinstance(i, int):
            ids.add(i)
    return ids


def _truncate(ex: dict[str, torch.Tensor], last_turn_start: int, processor: Any, opts: EncodeOptions
              ) -> dict[str, torch.Tensor]:
    ids = ex["input_ids"]
    img_pos = torch.isin(ids, torch.tensor(sorted(_image_token_ids(processor)) or [-1])).nonzero()
    if len(img_pos) and int(img_pos[-1]) >= opts.max_length:
        # Cutting inside image tokens would desynchronise tokens and image features.
        raise SkipExample("image_truncation", f"{len(ids)} tokens, image ends at {int(img_pos[-1]) + 1}")
    if not opts.truncate_final_turn or last_turn_start >= opts.max_length - 1:
        raise SkipExample("too_long", f"{len(ids)} tokens > max_length {opts.max_length}")
    out = dict(ex)
    for k in TEXT_KEYS:
        out[k] = ex[k][: opts.max_length]
    for k in SEQUENCE_ALIGNED_KEYS:
        if k in out:
            out[k] = out[k][:, : opts.max_length]
    return out


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


def write_parquet(path: str, examples: Sequence[dict[str, Any]]) -> None:
    """Write rows in the dataset layout (`id`, `images` as {bytes, path} PNG structs, `messages`, `task_kind`,
    `split`). Used by tests and benchmarks; the pipeline's own sink writes the same layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    content = pa.struct([("type", pa.string()), ("text", pa.string())])
    schema = pa.schema([
        ("id", pa.string()),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.list_(content))]))),
        ("task_kind", pa.string()),
        ("split", pa.string()),
    ])
    rows = [{
        "id": e["id"],
        "images": [{"bytes": png(im), "path": None} for im in e.get("images", [])],
        "messages": [{"role": m["role"], "content": [{"type": c["type"], "text": c.get("text")} for c in m["content"]]}
                     for m in e["messages"]],
        "task_kind": e.get("task_kind", "synthetic"),
        "split": e.get("split", "train"),
    } for e in examples]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def conversation(image: bool, turns: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Messages in the dataset layout from (user, assistant) text pairs; the image goes in the first user turn."""
    out: list[dict[str, Any]] = []
    for k, (q, a) in enumerate(turns):
        user = ([{"type": "image", "text": None}] if image and k == 0 else []) + [{"type": "text", "text": q}]
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    return out
