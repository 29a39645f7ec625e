"""What the learner learns in its own world: a model's accuracy on held-out general-world questions, per
question type, against the majority answer of that type (a blind prior).

If the generalist cannot answer a kind of question about general images (small objects, option letters), the
domain questions of the same kind are out of reach too, whatever the synthetic tasks say.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

LEARNABILITY_SEED = 77  # general items of their own stream (pre-training uses 11, seed data 12, judge 13-15)
_PER_OBJECT = ("Is there", "Is this", "Where", "What color", "How large")


def _kind(question: str, choice: bool) -> str:
    if choice or question.startswith(_PER_OBJECT):
        return ("choice: " if choice else "") + " ".join(question.split()[:2])
    return question


def general_vqa(model_dir: Path, n_images: int = 60, max_tokens: int = 12) -> dict[str, Any]:
    """Greedy short answers and option letters on n held-out general images (the eval's prompt layouts)."""
    from pipelines.core.batched_engine import BatchedVLMEngine
    from pipelines.core.engines import GenRequest
    from pipelines.experiments.miniworld import worlds
    from posttrain.eval.runner import chat_renderer

    rng = random.Random(LEARNABILITY_SEED)
    questions = []
    for i in range(n_images):
        attrs, img, _ = worlds.make_general(i, seed=LEARNABILITY_SEED)
        for t in worlds.general_tasks(attrs, rng):
            questions.append((_kind(t["instruction"], False), worlds.short_prompt(t["instruction"]), t["precise"], img))
        for q, opts, truth in worlds.general_choice_tasks(attrs, rng):
            questions.append((_kind(q, True), worlds.choice_prompt(q, opts), "ABCD"[opts.index(truth)], img))
    engine = BatchedVLMEngine(model_dir, max_tokens)
    try:
        chat = chat_renderer(engine.processor)
        preds = []
        for s in range(0, len(questions), 64):
            batch = questions[s:s + 64]
            preds += [r.text.strip() for r in engine.generate([GenRequest(chat(p), [im]) for _, p, _, im in batch])]
    finally:
        engine.close()

    def norm(x: str) -> str:
        return x.lower().strip(" .")

    hits: dict[str, list[bool]] = collections.defaultdict(list)
    answers: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (kind, _, truth, _), pred in zip(questions, preds, strict=True):
        hits[kind].append(norm(pred) == norm(truth) or (kind.startswith("choice") and pred[:1] == truth))
        answers[kind][norm(truth)] += 1
    n = sum(len(v) for v in hits.values())
    return {"n_questions": n, "accuracy": sum(sum(v) for v in hits.values()) / n,
            "majority_prior": sum(c.most_common(1)[0][1] for c in answers.values()) / n,
            "by_type": {k: {"n": len(v), "accuracy": sum(v) / len(v),
                            "majority_prior": answers[k].most_common(1)[0][1] / len(v)} for k, v in hits.items()}}
