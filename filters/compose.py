"""Answer composition: one training answer per kept (instruction, informative, precise) triplet.

The text functions are pure and tested directly; `ComposeStage` only applies them to rows.
Forms (`answer_form`):
  informative          the informative answer alone (it already concludes)
  informative_precise  informative + " " + precise
  cot                  "{informative} So the answer is {precise}." (or another phrasing, fixed per id+task)
  precise              precise answer only (mode 'precise', or no informative answer)

Which combined form a triplet gets is decided by `compose.form_rule`:
  indicator_words (default, the reference rule of bigai-ai/QA-Synthesizer process/syn_utils.py
                  `cook_classified_entry`): an indicator word in the informative answer's last sentence
                  -> informative; else an indicator word in the precise answer -> informative_precise;
                  else cot.
  last_sentence   (this project's earlier rule): the informative answer's last sentence contains the
                  precise answer -> informative; a precise answer that is a full sentence ->
                  informative_precise; else cot.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from typing import Any

from filters.config import ComposeConfig
from pipelines.core.rows import add_count, add_task_rejects, get_tasks, set_tasks
from pipelines.core.stage import Stage

log = logging.getLogger(__name__)

# Chain-of-thought joins. Several phrasings so a model does not learn one fixed string;
# which one a task gets depends only on (row id, task index), so re-runs are identical.
COT_TEMPLATES: tuple[str, ...] = (
    "{informative} So the answer is {precise}.",
    "{informative} Therefore, the answer is {precise}.",
    "{informative} Thus, the answer is {precise}.",
    "{informative} Hence, the answer is {precise}.",
    "{informative} In conclusion, the answer is {precise}.",
    "{informative} The answer is therefore {precise}.",
)

# The reference's indicator list: MMMU's answer indicators with "is " removed, each with its trailing
# space, matched as lower-case substrings (so "also " counts as "so ", as in the reference).
INDICATORS: tuple[str, ...] = ("could be ", "so ", "thus ", "therefore ", "final ", "answer ", "result ")
FORM_RULES = ("indicator_words", "last_sentence")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_NON_WORD = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces: for 'does A state B' checks."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _NON_WORD.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def last_sentence(text: str) -> str:
    """The last sentence of `text` (split after . ! ? followed by space)."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    return parts[-1] if parts else ""


def states_conclusion(informative: str, precise: str) -> bool:
    """True when the informative answer's last sentence contains the precise answer (normalized, whole words)."""
    p = normalize(precise)
    if not p:
        return False
    return f" {p} " in f" {normalize(last_sentence(informative))} "


def is_concluding_sentence(precise: str) -> bool:
    """True when the precise answer reads as a full sentence (>= 3 words ending in . ! ?), not a short phrase."""
    p = precise.strip()
    return len(p.split()) >= 3 and p[-1:] in ".!?"


def _with_period(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


def template_index(key: str, n: int = len(COT_TEMPLATES)) -> int:
    """Deterministic choice in [0, n) from a string key (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % n


def compose_combined(informative: str, precise: str, key: str) -> tuple[str, str]:
    """Combined answer by the last-sentence rule (form_rule 'last_sentence'). `key` picks the CoT phrasing."""
    informative, precise = informative.strip(), precise.strip()
    if not informative:
        return precise, "precise"
    if not precise or states_conclusion(informative, precise):
        return informative, "informative"
    if is_concluding_sentence(precise):
        return f"{_with_period(informative)} {precise}", "informative_precise"
    template = COT_TEMPLATES[template_index(key)]
    return template.format(informative=_with_period(informative), precise=precise.rstrip(".!? ")), "cot"


def indicator_in_last_sentence(informative: str) -> bool:
    """Reference test on the informative answer: its lower-cased text split on ". ", last piece, any indicator."""
    last = informative.strip().lower().split(". ")[-1]
    return any(w in last for w in INDICATORS)


def indicator_in(text: str) -> bool:
    """Reference test on the precise answer: any indicator anywhere in its lower-cased text."""
    low = text.lower()
    return any(w in low for w in INDICATORS)


def compose_by_indicators(informative: str, precise: str, key: str) -> tuple[str, str]:
    """Combined answer by the reference's indicator-word rule. `key` picks the chain-of-thought phrasing."""
    informative, precise = informative.strip(), precise.strip()
    if not informative:
        return precise, "precise"
    if not precise or indicator_in_last_sentence(informative):
        return informative, "informative"
    if indicator_in(precise):
        return f"{informative} {precise}", "informative_precise"  # joined with one space, as the reference
    template = COT_TEMPLATES[template_index(key)]
    return template.format(informative=_with_period(informative), precise=precise.rstrip(".!? ")), "cot"


def compose_answer(informative: str, precise: str, mode: str, key: str,
                   rule: str = "indicator_words") -> tuple[str, str]:
    """(answer, answer_form) for a compose mode; answer is "" when the mode's source text is empty."""
    if mode == "precise":
        return precise.strip(), "precise"
    if mode == "informative":
        return informative.strip(), "informative"
    if mode in ("combined", "unfiltered"):
        if rule == "indicator_words":
            return compose_by_indicators(informative, precise, key)
        if rule == "last_sentence":
            return compose_combined(informative, precise, key)
        raise ValueError(f"unknown compose form rule {rule!r}; allowed: {', '.join(FORM_RULES)}")
    raise ValueError(f"unknown compose mode {mode!r}; allowed: combined, precise, informative, unfiltered")


def task_key(row_id: str, index: int) -> str:
    return f"{row_id}#{index}"


class ComposeStage(Stage):
    """Writes `answer` and `answer_form` for every kept task; a task with nothing to train on is rejected."""

    name = "compose"
    requires = {"id": "stable row id", "tasks": "JSON list of judged tasks"}
    adds = {"task_rejects": "[]"}

    def __init__(self, cfg: ComposeConfig):
        self.mode = cfg.mode
        self.rule = cfg.form_rule

    def process(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            tasks = get_tasks(row)
            kept, rejects = [], []
            for i, task in enumerate(tasks):
                answer, form = compose_answer(
                    task.get("informative") or "", task.get("precise") or "", self.mode, task_key(row["id"], i),
                    self.rule,
                )
                if not answer:
                    rejects.append(_empty_reject(task, self.mode))
                    continue
                kept.append({**task, "answer": answer, "answer_form": form})
            set_tasks(row, kept)
            add_task_rejects(row, rejects)
            add_count(row, self.name, n_in=len(tasks), n_out=len(kept), n_rejected=len(rejects))

    @classmethod
    def ray_options(cls, batch_size: int) -> dict[str, Any]:
        """`batch_size`: the judge's, so blocks pass through unsplit."""
        import ray.data

        # Cheap text work: one small actor keeps up with the judge pool.
        return {"compute": ray.data.ActorPoolStrategy(size=1), "batch_size": batch_size, "num_cpus": 0.25}


def _empty_reject(task: dict[str, Any], mode: str) -> dict[str, Any]:
    return {
        "stage": "compose",
        "reason": "empty_answer",
        "detail": f"no text for compose mode {mode!r}",
        "instruction": task.get("instruction", ""),
        "precise": task.get("precise", ""),
        "informative": task.get("informative", ""),
        "label": task.get("label", ""),
        "score": task.get("score"),
    }
