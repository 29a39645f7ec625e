"""Mixing: a row's caption task and kept synthetic tasks become output records (TRL conversational format).

A record is `{"split", "messages", "task_kind", "n_synthetic", "judge_scores"}`; `messages` follows the
transformers/TRL chat format with one `{"type": "image"}` part, in the first user turn only.
Strategies: single_stage (one conversation mixing caption and synthetic turns, the AdaMLLM default),
synthetic_only, caption_only, two_stage (split "stage1" caption, split "stage2" synthetic).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from filters.compose import compose_answer, task_key
from filters.config import MixConfig
from pipelines.core.contract import caption_record, caption_turn, make_record, messages, strip_image_tags
from pipelines.core.rows import add_task_rejects, get_tasks, reject
from pipelines.core.stage import Stage

log = logging.getLogger(__name__)

def synthetic_turns(row: dict[str, Any]) -> tuple[list[tuple[str, str]], list[Any], list[dict[str, Any]]]:
    """(instruction, answer) turns of the kept tasks, their judge scores, and the tasks unusable as a turn.

    A task without a composed `answer` (compose did not run) gets the combined answer here.
    """
    turns, scores, unusable = [], [], []
    for i, task in enumerate(get_tasks(row)):
        answer = task.get("answer") or compose_answer(  # tasks the compose stage did not see: default rule
            task.get("informative") or "", task.get("precise") or "", "combined", task_key(row["id"], i)
        )[0]
        if not answer or not (task.get("instruction") or "").strip():
            unusable.append(task)
            continue
        turns.append((task["instruction"], answer))
        scores.append(task.get("score"))
    return turns, scores, unusable


def caption_first(row_id: str, seed: int, position: str) -> bool:
    """Whether the caption turn leads the conversation; 'random' is a coin flip seeded by (seed, id)."""
    if position == "first":
        return True
    if position == "last":
        return False
    if position == "random":
        return random.Random(f"{seed}:{row_id}").random() < 0.5
    raise ValueError(f"unknown caption_position {position!r}; allowed: random, first, last")


def build_records(row: dict[str, Any], strategy: str, caption_position: str = "random", seed: int = 0) -> list[dict]:
    """Output records of one row. Raises NoSyntheticTask for synthetic_only rows without a kept task."""
    syn, scores, _ = synthetic_turns(row)
    cap = caption_turn(row)
    if strategy == "caption_only":
        return [caption_record(row)]
    if strategy == "synthetic_only":
        if not syn:
            raise NoSyntheticTask(row["id"])
        return [make_record(syn, "synthetic", n_synthetic=len(syn), judge_scores=scores)]
    if strategy == "two_stage":
        out = [make_record([cap], "caption", n_synthetic=0, judge_scores=[], split="stage1")]
        if syn:
            out.append(make_record(syn, "synthetic", n_synthetic=len(syn), judge_scores=scores, split="stage2"))
        return out
    if strategy == "single_stage":
        if not syn:
            return [caption_record(row)]
        turns = [cap, *syn] if caption_first(row["id"], seed, caption_position) else [*syn, cap]
        return [make_record(turns, "mixed", n_synthetic=len(syn), judge_scores=scores)]
    raise ValueError(f"unknown mix strategy {strategy!r}; allowed: single_stage, synthetic_only, caption_only, two_stage")


class NoSyntheticTask(ValueError):
    """A synthetic_only export met an image whose synthetic tasks were all rejected."""


class MixStage(Stage):
    """Row-level: fills `records` (JSON) for every active row."""

    name = "mix"
    row_level = True
    requires = {"id": "stable row id", "caption": "caption text", "tasks": "JSON list of composed tasks"}
    adds = {"records": "[]"}

    def __init__(self, cfg: MixConfig):
        self.mix = cfg

    def process(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            _, _, unusable = synthetic_turns(row)
            if unusable:  # upstream stages should prevent this; record rather than drop
                add_task_rejects(row, [_empty_task_reject(t) for t in unusable])
            try:
                records = build_records(row, self.mix.strategy, self.mix.caption_position, self.mix.seed)
            except NoSyntheticTask:
                reject(row, self.name, "no_synthetic_task", "synthetic_only export and no synthetic task was kept")
                continue
            row["records"] = json.dumps(records, ensure_ascii=False)

    @classmethod
    def ray_options(cls, batch_size: int) -> dict[str, Any]:
        import ray.data

        return {"compute": ray.data.ActorPoolStrategy(size=1), "batch_size": batch_size, "num_cpus": 0.25}


def _empty_task_reject(task: dict[str, Any]) -> dict[str, Any]:
    fields = ("instruction", "precise", "informative", "label", "score")
    return {"stage": "mix", "reason": "empty_task", "detail": "no instruction or no answer text",
            **{k: task.get(k) for k in fields}}


# -- general (non-domain) conversations --------------------------------------------------------------


def _conversation_turns(item: dict[str, Any]) -> list[tuple[str, str]]:
    """LLaVA/AdaMLLM `conversations` (from/value) or ShareGPT `messages` (role/content) -> text turns."""
    if "conversations" in item:
        msgs = [(m.get("from"), m.get("value", "")) for m in item["conversations"]]
        user_roles, bot_roles = {"human", "user"}, {"gpt", "assistant"}
    elif "messages" in item:
        msgs = [(m.get("role"), m.get("content", "")) for m in item["messages"]]
        user_roles, bot_roles = {"user"}, {"assistant"}
    else:
        raise ValueError("general record has neither 'conversations' nor 'messages'")
    msgs = [(r, v) for r, v in msgs if r != "system"]
    turns = []
    for (ru, u), (ra, a) in zip(msgs[0::2], msgs[1::2], strict=False):
        if ru not in user_roles or ra not in bot_roles:
            raise ValueError(f"general record turns are not user/assistant pairs: {ru!r}, {ra!r}")
        turns.append((strip_image_tags(u), a))
    if not turns:
        raise ValueError("general record has no user/assistant turn pair")
    return turns


def _image_paths(item: dict[str, Any]) -> list[str]:
    images = item.get("images", item.get("image", []))
    return [images] if isinstance(images, str) else list(images or [])


def load_general_records(path: str, fraction: float, n_domain: int, seed: int) -> list[dict[str, Any]]:
    """Sample round(fraction * n_domain) general conversations from an AdaMLLM/LLaVA-format JSON.

    `path` is the JSON file (images relative to its folder) or a folder holding exactly one .json.
    Records carry `images: [bytes]` and task_kind "general". A malformed record or a missing image among
    the sampled ones raises: general data is curated input, and a silent shortfall would skew the mix.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected exactly one .json file in the folder, found {len(found)}")
        p = found[0]
    items = json.loads(p.read_text())
    if not isinstance(items, list):
        raise ValueError(f"{p}: expected a JSON list of conversations")
    n = round(fraction * n_domain)
    if n > len(items):
        log.warning("general data %s has %d conversations, fewer than the %d asked for; using all", p, len(items), n)
    chosen = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    root = p.parent.resolve()
    records = []
    for i in chosen:
        item = items[i]
        try:
            turns = _conversation_turns(item)
        except ValueError as e:
            raise ValueError(f"{p} record {i}: {e}") from None
        images = []
        for rel in _image_paths(item):
            img_path = (root / rel).resolve()
            if not img_path.is_relative_to(root):
                raise ValueError(f"{p} record {i}: image path {rel!r} escapes {root}")
            images.append(img_path.read_bytes())
        records.append(
            {
                "split": "train",
                "messages": messages(turns, n_images=len(images)),
                "task_kind": "general",
                "n_synthetic": 0,
                "judge_scores": [],
                "images": images,
            }
        )
    log.info("sampled %d general conversations from %s", len(records), p)
    return records
