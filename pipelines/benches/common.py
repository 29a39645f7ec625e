"""What the training benches share: a length-varied dataset, a padding-counting collator, spread figures."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from PIL import Image

from pipelines.core.contract import messages, write_dataset
from posttrain.collate import Collator


def spread(xs: list[float]) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def rate_after(stamps: list[tuple[float, int]], warmup: int) -> float:
    """Tokens/s between the end of step `warmup` and the last step; stamps = (time, cumulative tokens) per step."""
    (t0, n0), (t1, n1) = stamps[min(warmup, len(stamps) - 2)], stamps[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9)


WORDS = ["red", "blue", "green", "cell", "tissue", "food", "apple", "soup", "white", "black", "round", "small", "large"]


def make_dataset(path: Path, n: int, seed: int = 0) -> None:
    """Conversations whose answers vary from 1 to ~120 words, so batching order matters."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        answer = " ".join(rng.choice(WORDS) for _ in range(int(rng.expovariate(1 / 30)) + 1))[:700]
        examples.append({"id": f"b{i}", "images": [Image.new("RGB", (32, 32), rng.choice(["red", "blue", "green"]))],
                         "messages": messages([("Describe the image.", answer)])})
    write_dataset(str(path), examples)


class _Counting:
    """Collator wrapper that tallies real and padded token slots (and drops the `ids` list for Trainer)."""

    def __init__(self, inner: Collator, drop_ids: bool) -> None:
        self.inner, self.drop_ids = inner, drop_ids
        self.real = self.slots = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        self.real += int(batch["attention_mask"].sum())
        self.slots += batch["attention_mask"].numel()
        if self.drop_ids:
            batch.pop("ids")
        return batch
