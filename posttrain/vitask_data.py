"""VITask training data on top of `posttrain.encoding` and `posttrain.dataset`: single-turn examples, CRT negatives, TSM pixels.

Dataset rows follow the dataset contract (`id`, `images`, `messages`, ...). VITask works on
(image, instruction, response) triples, so every user->assistant pair of a row becomes one example
(id `<row id>` for a single-turn row, `<row id>#t<k>` otherwise) that keeps the row's image. Tokenization,
assistant-only labels, skipping and collation are the shared ones (`SFTDataset`, `encode_example`,
`Collator`); this module adds what only VITask needs: the TSM's pixels of each image and, for CRT, the same
instruction and response encoded with a *negative* image (that of another example with the same
instruction and a different response, picked by seeded sampling, drawn afresh each epoch).

Nothing is dropped silently: a row or turn that cannot be used becomes a reject record
`{id, stage: "vitask", reason, detail}` (`missing_image`, `multiple_images`, `no_turns`,
`empty_instruction`, `empty_response`, and the encoder's `too_long`, `image_truncation`,
`unreadable_image`, `no_labels`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from posttrain.collate import Collator
from posttrain.dataset import SFTDataset
from posttrain.encoding import EncodeOptions, SkipExample, encode_example, row_images
from posttrain.tsm import TaskSpecificModel

log = logging.getLogger(__name__)

STAGE = "vitask"
BATCH_KEYS = ("labels", "ids")  # Collator outputs that are not model inputs


def reject(rid: str, reason: str, detail: str = "") -> dict[str, str]:
    return {"id": rid, "stage": STAGE, "reason": reason, "detail": detail}


def single_turn(instruction: str, response: str | None = None) -> list[dict[str, Any]]:
    """Chat-template messages: the image and the instruction in the user turn, optionally the response."""
    out = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    if response is not None:
        out.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    return " ".join((c.get("text") or "").strip() for c in content if c.get("type") == "text").strip()


@dataclass(frozen=True)
class Turn:
    """One VITask example: a user->assistant pair of row `row`, trained with that row's image."""

    id: str
    row: int
    instruction: str
    response: str
    label: str = ""  # the row's class label, when the dataset has a `label` column


def single_turn_examples(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Turn], list[dict[str, str]]]:
    """Dataset rows -> (one `Turn` per user->assistant pair, reject records). Images are not decoded here."""
    turns: list[Turn] = []
    rejects: list[dict[str, str]] = []
    for i in range(len(rows)):
        row = rows[i]
        rid = str(row.get("id") or f"row{i}")
        n_images = len(row.get("images") or [])
        if n_images != 1:
            # The TSM yields one exemplar per image; VITask examples carry exactly one.
            rejects.append(reject(rid, "missing_image" if n_images == 0 else "multiple_images", f"{n_images} images"))
            continue
        messages = list(row.get("messages") or [])
        pairs = [(messages[k], messages[k + 1]) for k in range(len(messages) - 1)
                 if messages[k]["role"] == "user" and messages[k + 1]["role"] == "assistant"]
        if not pairs:
            rejects.append(reject(rid, "no_turns", "no user turn followed by an assistant turn"))
            continue
        for k, (user, assistant) in enumerate(pairs):
            tid = rid if len(pairs) == 1 else f"{rid}#t{k}"
            instruction, response = _text(user["content"]), _text(assistant["content"])
            if not instruction:
                rejects.append(reject(tid, "empty_instruction"))
            elif not response:
                rejects.append(reject(tid, "empty_response"))
            else:
                turns.append(Turn(tid, i, instruction, response, str(row.get("label") or "")))
    return turns, rejects


def find_negatives(
    instructions: Sequence[str], responses: Sequence[str], *, seed: int = 0, epoch: int = 0,
    keys: Sequence[str] | None = None,
) -> list[int | None]:
    """For each sample, the index of another sample with the same instruction and a different response,
    drawn by seeded sampling: uniformly among all such samples, with `random.Random(f"{seed}:{epoch}:{key}")`
    per sample (key: `keys[i]`, default its index), so a run repeats and each epoch draws afresh.
    Responses compare stripped and case-folded. None where no sample qualifies; callers count those.
    """
    if len(instructions) != len(responses) or (keys is not None and len(keys) != len(instructions)):
        raise ValueError("instructions, responses and keys differ in length")
    norm_i = [s.strip() for s in instructions]
    norm_r = [s.strip().casefold() for s in responses]
    # Per instruction, members ordered by response bucket: the candidates of i are that order minus the span
    # of i's own bucket, so the k-th candidate is found in O(1) (no per-sample candidate lists).
    buckets: dict[str, dict[str, list[int]]] = {}
    for i, (ki, kr) in enumerate(zip(norm_i, norm_r, strict=True)):
        buckets.setdefault(ki, {}).setdefault(kr, []).append(i)
    order: dict[str, list[int]] = {}
    span: dict[tuple[str, str], tuple[int, int]] = {}
    for ki, by_resp in buckets.items():
        order[ki] = []
        for kr, members in by_resp.items():
            span[ki, kr] = (len(order[ki]), len(order[ki]) + len(members))
            order[ki] += members
    out: list[int | None] = []
    for i, (ki, kr) in enumerate(zip(norm_i, norm_r, strict=True)):
        start, end = span[ki, kr]
        n_other = len(order[ki]) - (end - start)
        if n_other == 0:
            out.append(None)
            continue
        k = random.Random(f"{seed}:{epoch}:{keys[i] if keys is not None else i}").randrange(n_other)
        out.append(order[ki][k if k < start else k + (end - start)])
    return out


class _TurnRows:
    """`SFTDataset` rows view: turn i as a one-turn row `{id, images, messages}` (images read lazily)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], turns: Sequence[Turn]):
        self.rows, self.turns = rows, turns

    def __len__(self) -> int:
        return len(self.turns)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.turns[i]
        return {"id": t.id, "images": self.rows[t.row]["images"], "messages": single_turn(t.instruction, t.response)}


class VITaskDataset(torch.utils.data.Dataset):
    """Encoded single-turn examples (via `SFTDataset`), each with its image and, when `with_negatives`
    is set, the same conversation encoded with its CRT negative's image (None when it has none).

    `lengths` serve `LengthGroupedBatchSampler`; `rejects` lists every row or turn not trained on.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], processor: Any, opts: EncodeOptions, seed: int = 0):
        self.rows, self.processor, self.opts, self.seed = rows, processor, opts, seed
        all_turns, self.rejects = single_turn_examples(rows)
        self.sft = SFTDataset(_TurnRows(rows, all_turns), processor, opts)
        self.rejects += [reject(s["id"], s["reason"], s["detail"]) for s in self.sft.skipped]
        self.turns = [all_turns[i] for i in self.sft.index]
        self.with_negatives = True
        self.set_epoch(0)
        for r in self.rejects:
            log.warning("vitask: %s rejected (%s) %s", r["id"], r["reason"], r["detail"])

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's CRT negatives (seeded sampling, see `find_negatives`)."""
        self.epoch = epoch
        self.negatives = find_negatives([t.instruction for t in self.turns], [t.response for t in self.turns],
                                        seed=self.seed, epoch=epoch, keys=[t.id for t in self.turns])

    @property
    def lengths(self) -> list[int]:
        return self.sft.lengths

    @property
    def n_without_negative(self) -> int:
        return sum(n is None for n in self.negatives)

    def __len__(self) -> int:
        return len(self.turns)

    def image(self, i: int) -> Image.Image:
        return row_images(self.rows[self.turns[i].row])[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"example": self.sft[i], "image": self.image(i), "negative": None}
        j = self.negatives[i]
        if self.with_negatives and j is not None:
            t = self.turns[i]
            try:
                item["negative"] = encode_example(self.processor, single_turn(t.instruction, t.response),
                                                  [self.image(j)], self.opts)
            except SkipExample as e:  # e.g. the negative image expands to more tokens than max_length allows
                log.warning("vitask: no CRT negative for %s this step (%s)", t.id, e.reason)
        return item


@dataclass
class Batch:
    """Collated model inputs (`input_ids`, `attention_mask`, vision tensors), labels (-100 outside the
    response) and, for the exemplar passes, the TSM's pixels (B, 3, h, w)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str] = field(default_factory=list)
    tsm_pixels: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return dict(self.inputs)

    def vision_inputs(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.inputs.items() if k not in ("input_ids", "attention_mask")}

    @classmethod
    def from_collated(cls, collated: dict[str, Any], tsm_pixels: torch.Tensor | None = None) -> Batch:
        inputs = {k: v for k, v in collated.items() if k not in BATCH_KEYS}
        return cls(inputs, collated["labels"], list(collated.get("ids", [])), tsm_pixels)


@dataclass
class VITaskBatch:
    """A positive batch, plus its samples `negative_rows` re-encoded with their negative image."""

    positive: Batch
    negative: Batch | None
    negative_rows: list[int]


@dataclass
class VITaskCollator:
    """`VITaskDataset` items -> `VITaskBatch`; text/vision collation is `posttrain.collate.Collator`'s."""

    pad_token_id: int
    tsm: TaskSpecificModel | None = None

    def __call__(self, items: list[dict[str, Any]]) -> VITaskBatch:
        collate = Collator(self.pad_token_id)
        pixels = self.tsm.pixel_values([it["image"] for it in items]) if self.tsm is not None else None
        positive = Batch.from_collated(collate([it["example"] for it in items]), pixels)
        rows = [k for k, it in enumerate(items) if it["negative"] is not None]
        negative = Batch.from_collated(collate([items[k]["negative"] for k in rows])) if rows else None
        return VITaskBatch(positive, negative, rows)


def pad_token_id(processor: Any) -> int:
    tok = getattr(processor, "tokenizer", processor)
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
