"""Scoring of the method check: the eval runner over the miniworld VQA sets, the question prior, the judge check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.core.batched_engine import BatchedVLMEngine


def summary_score(scores: dict[str, dict[str, Any]]) -> float:
    """Mean of SLAKE open recall, SLAKE closed accuracy and PMC-VQA accuracy (each in [0, 1])."""
    s, p = scores["slake"]["metrics"], scores["pmc_vqa"]["metrics"]
    return (s.get("open_recall", 0.0) + s.get("closed_accuracy", 0.0) + p.get("accuracy", 0.0)) / 3


def load_sets(sets: dict[str, dict[str, Path]]) -> dict[str, dict[str, list]]:
    """{split: {task: examples}}, read once for every model that is evaluated on them."""
    from posttrain.eval.tasks import get_task

    return {split: {task: get_task(task).load(path).examples for task, path in paths.items()}
            for split, paths in sets.items()}


def evaluate(model_dir: Path, examples: dict[str, list], max_tokens: int, pred_dir: Path) -> dict[str, Any]:
    """Greedy answers through the eval runner and their scores per task, plus the summary score."""
    from posttrain.eval.runner import chat_renderer, predict, score, write_jsonl
    from posttrain.eval.tasks import get_task

    engine = BatchedVLMEngine(model_dir, max_tokens)
    try:
        chat = chat_renderer(engine.processor)
        out = {}
        for task, exs in examples.items():
            preds = predict(get_task(task), exs, engine, chat, batch_size=64)
            write_jsonl(pred_dir / f"{task}.jsonl", preds)
            out[task] = score(task, preds, [e.ref() for e in exs])
    finally:
        engine.close()
    out["score"] = summary_score(out)
    return out


def prior_scores(sets: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Test scores of the question prior learned on the validation split (`load_sets` examples)."""
    from posttrain.eval.baselines import question_prior
    from posttrain.eval.runner import score

    out = {}
    for task, exs in sets["test"].items():
        known = [e.ref() for e in sets["val"][task]]
        refs = [e.ref() for e in exs]
        out[task] = score(task, question_prior(known, refs), refs)
    out["score"] = summary_score(out)
    return out


@contextmanager
def judge_labeller(judge: Path) -> Iterator[Callable[[list[dict[str, str]]], list[str]]]:
    """A function giving the judge's label for each triplet, through the judge's own prompt rendering and
    structured choice (one engine for all calls; closed on exit)."""
    from filters.judge import CHOICES, label_of, render
    from pipelines.core.engines import GenRequest, SamplingSettings, make_engine
    from pipelines.core.resources import EngineResources
    from pipelines.experiments.miniworld import data

    template = data.judge_template()
    engine = make_engine(str(judge), EngineResources(engine="transformers", device="cpu"),
                         sampling=SamplingSettings(max_tokens=4), multimodal=False, max_model_len=1024)

    def labels(triplets: list[dict[str, str]]) -> list[str]:
        results = engine.generate([GenRequest(render(template, t["instruction"], t["informative"], t["precise"]),
                                              choices=list(CHOICES)) for t in triplets])
        return [label_of(r) for r in results]

    try:
        yield labels
    finally:
        engine.close()


def judge_accuracy(judge: Path, n_images: int = 6, seed: int = 99) -> dict[str, Any]:
    """The trained judge on held-out triplets (labelled by construction; `held_out_triplets`), through the
    judge's own prompt rendering and structured choice: accuracy overall and per true label, for the
    general-world set (top level, as before) and the domain-like set (`domain`)."""
    from pipelines.experiments.miniworld import data

    sets = data.held_out_triplets(n_images, seed)

    def accuracy(labels: Callable[[list[dict[str, str]]], list[str]], triplets: list[dict[str, str]]) -> dict[str, Any]:
        per: dict[str, list[bool]] = {}
        for t, label in zip(triplets, labels(triplets), strict=True):
            per.setdefault(t["label"], []).append(label == t["label"])
        hits = [h for v in per.values() for h in v]
        return {"n": len(hits), "accuracy": sum(hits) / len(hits),
                "by_label": {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(per.items())}}

    with judge_labeller(judge) as labels:
        return {**accuracy(labels, sets["general"]), "domain": accuracy(labels, sets["domain"])}
