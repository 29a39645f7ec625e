"""Reference answerers that never look at the image, scored like a model (`runner.score`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from posttrain.eval.tasks import LETTERS


def question_prior(known: list[dict[str, Any]], refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictions of an answerer that never looks at the image (the VQA "question prior" baseline): for each
    reference, the answer most often right for the same question text among `known` references (another
    split), in the reference's own form (an option's letter when that answer is one of its options)."""

    def text(r: dict[str, Any]) -> str:
        return r["choices"][LETTERS.index(r["answer"])] if r.get("choices") else r["answer"]

    by_q: dict[str, Counter] = {}
    for r in known:
        by_q.setdefault(r["question"], Counter())[text(r)] += 1
    letters = Counter(r["answer"] for r in known if r.get("choices"))
    preds = []
    for r in refs:
        guess = (by_q.get(r["question"]) or Counter({"": 1})).most_common(1)[0][0]
        if r.get("choices"):
            guess = LETTERS[r["choices"].index(guess)] if guess in r["choices"] else \
                (letters.most_common(1) or [("A", 0)])[0][0]
        preds.append({"id": r["id"], "prediction": guess})
    return preds
