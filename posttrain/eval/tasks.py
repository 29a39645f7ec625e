"""Benchmark task specs: name -> loader, prompt template (a data file) and the metrics it reports.

Every loader reads a local copy in the benchmark's published layout (see each loader's docstring)
and returns `LoadResult(examples, rejects)`; items it cannot use are rejects, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path

from posttrain.eval import loaders_food as food
from posttrain.eval import loaders_med as med
from posttrain.eval.examples import Example, LoadResult
from posttrain.eval.metrics import LETTERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    domain: str
    loader: Callable[..., LoadResult]
    prompt: str  # template file in posttrain/eval/prompts/ with {question} and {options}
    metrics: tuple[str, ...]  # keys of `metrics.aggregate(...)["metrics"]` this task reports
    hub_id: str | None = None  # where the benchmark lives on the hub (used when no local copy is given)
    description: str = ""
    adamllm_prompt: str | None = None  # template of the AdaMLLM benchmark's `input` field (eval.prompt_style)

    def load(self, path: str | Path, split: str = "test", limit: int | None = None, **opts: object) -> LoadResult:
        res = self.loader(path, split=split, limit=limit, **opts)
        if res.rejects:
            log.info("%s: %d examples, %d rejects", self.name, len(res.examples), len(res.rejects))
        return res

    def render(self, ex: Example) -> str:
        """The user turn: template filled with the question and the options (if any)."""
        return template(self.prompt).format(question=ex.question, options=format_options(ex.choices),
                                            options_paren=format_options(ex.choices, paren=True)).strip()


def format_options(choices: list[str] | None, paren: bool = False) -> str:
    """'A. x\\nB. y' ('(A) x\\n(B) y' with `paren`) for up to 26 options; a comma-separated list beyond."""
    if not choices:
        return ""
    if len(choices) <= len(LETTERS):
        return "\n".join(f"({LETTERS[i]}) {c}" if paren else f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return ", ".join(choices)


@cache
def template(name: str) -> str:
    return (resources.files("posttrain.eval") / "prompts" / name).read_text(encoding="utf-8")


_VQA = ("open_recall", "closed_accuracy")
_MC = ("accuracy", "unparsed")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("slake", "biomed", med.load_slake, "vqa_short.txt", _VQA, "BoKelvin/SLAKE", "SLAKE (English)",
                 "question_only.txt"),
        TaskSpec("vqa_rad", "biomed", med.load_vqa_rad, "vqa_short.txt", _VQA, "flaviagiammarino/vqa-rad", "VQA-RAD",
                 "question_only.txt"),
        TaskSpec("pathvqa", "biomed", med.load_pathvqa, "vqa_short.txt", _VQA, "flaviagiammarino/path-vqa", "PathVQA",
                 "question_only.txt"),
        TaskSpec("pmc_vqa", "biomed", med.load_pmc_vqa, "choice.txt", _MC, "xmcmic/PMC-VQA", "PMC-VQA",
                 "choice_adamllm.txt"),
        TaskSpec("attributes", "biomed", med.load_attributes, "choice.txt", _MC, None,
                 "attribute multiple choice (SKINCON / WBCAtt / CBIS-DDSM style tables)"),
        TaskSpec("medmnist", "biomed", med.load_medmnist, "classify.txt", ("accuracy", "macro_f1", "unparsed"),
                 None, "MedMNIST classification with a label list (VITask)"),
        TaskSpec("recipe1m", "food", food.load_recipe1m, "recipe.txt", ("rouge_l",), None, "Recipe1M generation"),
        TaskSpec("nutrition5k", "food", food.load_nutrition5k, "ingredients.txt", ("recall",), None,
                 "Nutrition5K ingredients"),
        TaskSpec("food101", "food", food.load_food101, "classify.txt", ("accuracy", "macro_f1", "unparsed"),
                 "ethz/food101", "Food101 classification"),
        TaskSpec("foodseg103", "food", food.load_foodseg103, "multilabel.txt", ("f1",), "EduardoPacheco/FoodSeg103",
                 "FoodSeg103 multi-label"),
    )
}


class UnknownTaskError(KeyError):
    def __str__(self) -> str:
        return f"unknown task {self.args[0]!r}; known tasks: {', '.join(sorted(TASKS))}"


PROMPT_STYLES = ("project", "adamllm")


def get_task(name: str, prompt_style: str = "project") -> TaskSpec:
    """The task spec; prompt_style 'adamllm' swaps in the AdaMLLM benchmark's prompt where one is known."""
    try:
        spec = TASKS[name]
    except KeyError:
        raise UnknownTaskError(name) from None
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {prompt_style!r}; allowed: {', '.join(PROMPT_STYLES)}")
    if prompt_style == "adamllm" and spec.adamllm_prompt:
        return replace(spec, prompt=spec.adamllm_prompt)
    return spec
