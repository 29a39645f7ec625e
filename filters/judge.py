"""Consistency judge (AdaMLLM consistency filter): does the precise answer follow from the informative one?

A text LLM reads a few-shot prompt (filters/prompts/<name>.txt, or a domain override file) ending in
an answer cue ("## Consistent:" in the paper-structured default `adamllm_consistency`, "Label:" in the
rewritten `consistency_v1`) and is constrained to answer Yes, No or Open. The reference repository's own
prompt file is accepted as it is (`judge.prompt=<path>`; see `DIALECTS`). The chosen label's probability
(exp of its log-prob) is recorded as `score`. Tasks whose label is in `judge.keep_labels` stay in
`tasks`; the others move to `task_rejects` (judge_no / judge_open). In compose mode 'unfiltered'
every task stays (labels are still recorded, for the statistics).

The few-shot part is identical for every item and comes first, so with prefix caching the engine
computes its KV cache once per replica.
"""

from __future__ import annotations

import logging
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from filters.config import JudgeConfig
from pipelines.core.rows import add_count, add_task_rejects, get_tasks, set_tasks
from pipelines.core.stage import Stage
from pipelines.core.engines import Engine, GenRequest, GenResult, SamplingSettings

log = logging.getLogger(__name__)

# Structured-choice strings. The prompt ends with an answer cue ("Label:", "## Consistent:"), so each label
# follows a space.
CHOICES = (" Yes", " No", " Open")
LABELS = tuple(c.strip().lower() for c in CHOICES)
PLACEHOLDERS = ("instruction", "informative", "precise")
# Two template dialects, told apart by their placeholders. 'vlm-adapt': {instruction} {informative}
# {precise}, text taken literally. 'reference': the file format of bigai-ai/QA-Synthesizer
# vllm_inference/utils/consistency_filter_prompt.txt, a str.format template with {Q} {informative_A}
# {precise_A} ending "## Consistent:", where {{ and }} are literal braces.
DIALECTS: dict[str, dict[str, str]] = {
    "vlm-adapt": {p: p for p in PLACEHOLDERS},
    "reference": {"instruction": "Q", "informative": "informative_A", "precise": "precise_A"},
}
_PLACEHOLDER = re.compile(r"\{(instruction|informative|precise)\}")
_REFERENCE_TOKEN = re.compile(r"\{\{|\}\}|\{(Q|informative_A|precise_A)\}")
_REFERENCE_NAMES = {v: k for k, v in DIALECTS["reference"].items()}


def load_prompt(name_or_path: str) -> str:
    """Template text: a built-in name (filters/prompts/<name>.txt), a package file (``package:file.txt``), or a
    path to a domain override file (either dialect, e.g. the reference repository's prompt file as it is)."""
    package, sep, file = name_or_path.partition(":")
    if sep and "/" not in name_or_path and "\\" not in name_or_path:
        try:
            res = resources.files(package) / file
        except ModuleNotFoundError:
            raise FileNotFoundError(f"judge prompt {name_or_path!r}: no package {package!r}") from None
        if not res.is_file():
            raise FileNotFoundError(f"judge prompt {name_or_path!r}: package {package!r} has no file {file!r}")
        text = res.read_text(encoding="utf-8")
    elif name_or_path.endswith(".txt") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"judge prompt file {name_or_path!r} does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files("filters") / "prompts" / f"{name_or_path}.txt"
        if not res.is_file():
            names = sorted(p.name[:-4] for p in (resources.files("filters") / "prompts").iterdir()
                           if p.name.endswith(".txt"))
            raise FileNotFoundError(f"unknown judge prompt {name_or_path!r}: built-ins are {names} (or give a path)")
        text = res.read_text(encoding="utf-8")
    check_template(text, name_or_path)
    return text.rstrip()


def dialect_of(text: str) -> str:
    """'reference' when the template uses the reference placeholders ({Q}, ...), else 'vlm-adapt'."""
    ref = any("{" + n + "}" in text for n in DIALECTS["reference"].values())
    return "reference" if ref and not _PLACEHOLDER.search(text) else "vlm-adapt"


def check_template(text: str, name: str = "template") -> None:
    """Each placeholder of one dialect exactly once, none of the other; the text ends with an answer cue
    (a line ending in ':') after the last placeholder, so the shared few-shot part comes first."""
    dialect = dialect_of(text)
    other = DIALECTS["reference" if dialect == "vlm-adapt" else "vlm-adapt"]
    mixed = [p for p in other.values() if "{" + p + "}" in text]
    if mixed and any("{" + p + "}" in text for p in DIALECTS[dialect].values()):
        raise ValueError(f"judge prompt {name!r} mixes placeholder styles: {mixed} with the {dialect} ones")
    for p in DIALECTS[dialect].values():
        n = text.count("{" + p + "}")
        if n != 1:
            raise ValueError(f"judge prompt {name!r} must contain {{{p}}} exactly once, found {n}")
    if dialect == "reference" and re.search(r"[{}]", _REFERENCE_TOKEN.sub("", text)):
        raise ValueError(f"judge prompt {name!r} (reference format) has a single brace; "
                         "it is a str.format template, so write {{ and }} for literal braces")
    cue = text.rstrip().splitlines()[-1] if text.strip() else ""
    if not cue.endswith(":"):
        raise ValueError(f"judge prompt {name!r} must end with an answer cue line such as 'Label:' or "
                         f"'## Consistent:' (the label is generated after it), got {cue[-40:]!r}")


def render(template: str, instruction: str, informative: str, precise: str) -> str:
    """Fill the item in one pass, so braces inside the item text are never re-substituted."""
    values = {"instruction": instruction.strip(), "informative": informative.strip(), "precise": precise.strip()}
    if dialect_of(template) == "reference":
        return _REFERENCE_TOKEN.sub(lambda m: values[_REFERENCE_NAMES[m.group(1)]] if m.group(1)
                                    else m.group(0)[0], template)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def shared_prefix(template: str) -> str:
    """The part of the prompt every item shares (everything before the first placeholder), as rendered."""
    if dialect_of(template) == "reference":
        first = next(m for m in _REFERENCE_TOKEN.finditer(template) if m.group(1))
        return _REFERENCE_TOKEN.sub(lambda m: m.group(0)[0], template[: first.start()])
    return template[: _PLACEHOLDER.search(template).start()]


def label_of(result: GenResult) -> str | None:
    """Lower-cased label of a structured-choice result, or None when the text is not one of the labels."""
    label = result.text.strip().lower()
    return label if label in LABELS else None


def score_of(result: GenResult) -> float | None:
    """Probability of the chosen label: exp of its log-prob (None when the engine gave none)."""
    return None if result.choice_logprob is None else math.exp(result.choice_logprob)


def _reject(task: dict[str, Any], reason: str, detail: str, label: str = "", score: float | None = None) -> dict:
    return {
        "stage": "judge",
        "reason": reason,
        "detail": detail,
        "instruction": task.get("instruction", ""),
        "precise": task.get("precise", ""),
        "informative": task.get("informative", ""),
        "label": label,
        "score": score,
    }


class ConsistencyJudge(Stage):
    """Labels every task of every active row; keeps `keep_labels`, rejects the rest."""

    name = "judge"
    requires = {"id": "stable row id", "tasks": "JSON list of synthetic tasks (instruction, informative, precise)"}
    adds = {"task_rejects": "[]"}

    def __init__(self, cfg: JudgeConfig, *, filter_tasks: bool = True, seed: int = 0, engine: Engine | None = None):
        """`cfg.model` is a path or hub id (resolved at the edge). `filter_tasks=False` labels every task but
        keeps them all (`compose.mode=unfiltered`, the paper's no-filter ablation)."""
        self.template = load_prompt(cfg.prompt)
        self.keep = set(cfg.keep_labels)
        self.filter = filter_tasks
        self.max_model_len = cfg.max_model_len
        self._owns_engine = engine is None  # an injected engine belongs to the caller
        self.engine = engine if engine is not None else self._build_engine(cfg, seed)
        tok = self.engine.tokenizer
        self._choice_tokens = max(len(tok(c, add_special_tokens=False)["input_ids"]) for c in CHOICES)

    @staticmethod
    def _build_engine(jc: JudgeConfig, seed: int) -> Engine:
        from pipelines.core.engines import make_engine

        return make_engine(
            jc.model,
            jc,
            sampling=SamplingSettings(max_tokens=8, temperature=0.0, seed=seed),
            multimodal=False,
            max_model_len=jc.max_model_len,
            enable_prefix_caching=jc.enable_prefix_caching,
        )

    def process(self, rows: list[dict[str, Any]]) -> None:
        # One engine call for all tasks of the batch; results go back by (row, task index).
        requests: list[GenRequest] = []
        where: list[tuple[int, int]] = []
        too_long: dict[tuple[int, int], int] = {}
        tasks_per_row = [get_tasks(r) for r in rows]
        for ri, tasks in enumerate(tasks_per_row):
            for ti, t in enumerate(tasks):
                req = GenRequest(
                    prompt=render(self.template, t.get("instruction") or "", t.get("informative") or "",
                                  t.get("precise") or ""),
                    choices=list(CHOICES),
                )
                n = self.engine.count_prompt_tokens(req)
                if n + self._choice_tokens + 1 > self.max_model_len:
                    too_long[(ri, ti)] = n
                    continue
                requests.append(req)
                where.append((ri, ti))
        results = dict(zip(where, self.engine.generate(requests), strict=True))
        for ri, (row, tasks) in enumerate(zip(rows, tasks_per_row, strict=True)):
            kept, rejects = [], []
            for ti, task in enumerate(tasks):
                key = (ri, ti)
                if key in too_long:
                    detail = f"judge prompt has {too_long[key]} tokens, max_model_len is {self.max_model_len}"
                    self._decide(task, None, None, kept, rejects, "too_long", detail)
                    continue
                res = results[key]
                label, score = label_of(res), score_of(res)
                if label is None:
                    self._decide(task, None, score, kept, rejects, "unparseable", f"judge said {res.text[:200]!r}")
                    continue
                self._decide(task, label, score, kept, rejects, f"judge_{label}", "")
            set_tasks(row, kept)
            add_task_rejects(row, rejects)
            add_count(row, self.name, n_in=len(tasks), n_out=len(kept), n_rejected=len(rejects))

    def _decide(self, task: dict, label: str | None, score: float | None, kept: list, rejects: list,
                reason: str, detail: str) -> None:
        """Keep or reject one task. Unfiltered mode keeps everything, even tasks the judge could not label."""
        if not self.filter or (label is not None and label in self.keep):
            kept.append({**task, "label": label or "", "score": score})
        else:
            rejects.append(_reject(task, reason, detail, label or "", score))

    @classmethod
    def ray_options(cls, cfg: JudgeConfig) -> dict[str, Any]:
        from pipelines.core.engines import engine_pool_options

        return engine_pool_options(cfg, cfg.batch_size)

    def close(self) -> None:
        self.engine.close()

    def __del__(self) -> None:
        # Free the engine when Ray Data's actor releases the stage (see SynthStage.__del__).
        engine = getattr(self, "engine", None)  # unset when building it failed
        if engine is not None and self._owns_engine:
            engine.close()
