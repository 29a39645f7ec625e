"""Run a task: examples -> prompts (template + the model's chat template) -> batched greedy
generation through `pipelines.core.engines` -> prediction records; and score prediction files by id.

Prediction record (one JSONL line): `{id, task, prediction, answer, answer_type, choices, question,
n_prompt_tokens, n_output_tokens, finish_reason, reject_stage, reject_reason}`. An example that
cannot be run (unreadable image, prompt longer than the engine allows) keeps its line with
`prediction: null` and a reject reason, and scores as wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from posttrain.eval.examples import Example, to_pil
from posttrain.eval.metrics import aggregate
from posttrain.eval.reference_metrics import reference_aggregate
from posttrain.eval.tasks import TaskSpec

log = logging.getLogger(__name__)

RUN_STAGE = "eval_run"
ChatRenderer = Callable[[str], str]


def chat_renderer(processor: Any) -> ChatRenderer:
    """User text -> full prompt through the processor's chat template (one image, then the text)."""
    if processor is None or not getattr(processor, "chat_template", None):
        raise ValueError("the model's processor has no chat template; evaluation needs one to place the image")

    def render(text: str) -> str:
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    return render


def _batches(items: list[Example], n: int) -> Iterator[list[Example]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def predict(
    spec: TaskSpec,
    examples: list[Example],
    engine: Any,
    chat: ChatRenderer,
    *,
    batch_size: int = 32,
    max_model_len: int | None = None,
    max_tokens: int = 1,
) -> list[dict[str, Any]]:
    """One prediction record per example, in input order (ids checked: none lost, none duplicated)."""
    from pipelines.core.engines import GenRequest

    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{spec.name}: duplicate example ids {dup}")
    out: list[dict[str, Any]] = []
    for batch in _batches(examples, batch_size):
        records = [_record(spec, e) for e in batch]
        todo: list[tuple[dict[str, Any], Any]] = []
        for ex, rec in zip(batch, records, strict=True):
            try:
                image = to_pil(ex.image)
            except Exception as err:  # PIL raises several types for corrupt input
                _reject(rec, "unreadable_image", f"{type(err).__name__}: {err}")
                continue
            req = GenRequest(prompt=chat(spec.render(ex)), images=[image])
            if max_model_len is not None:
                n = engine.count_prompt_tokens(req)
                if n + max_tokens > max_model_len:
                    _reject(rec, "too_long", f"{n} prompt tokens + {max_tokens} new > max_model_len {max_model_len}")
                    continue
            todo.append((rec, req))
        results = engine.generate([r for _, r in todo]) if todo else []
        if len(results) != len(todo):
            raise RuntimeError(f"engine returned {len(results)} results for {len(todo)} requests")
        for (rec, _), res in zip(todo, results, strict=True):
            rec.update(prediction=res.text.strip(), n_prompt_tokens=res.n_prompt_tokens,
                       n_output_tokens=res.n_output_tokens, finish_reason=res.finish_reason)
        out.extend(records)
        log.info("%s: %d/%d examples", spec.name, len(out), len(examples))
    return out


def _record(spec: TaskSpec, ex: Example) -> dict[str, Any]:
    return {**ex.ref(), "task": spec.name, "prediction": None, "n_prompt_tokens": 0, "n_output_tokens": 0,
            "finish_reason": "", "reject_stage": "", "reject_reason": "", "reject_detail": ""}


def _reject(rec: dict[str, Any], reason: str, detail: str) -> None:
    rec.update(reject_stage=RUN_STAGE, reject_reason=reason, reject_detail=detail[:500])


# -- files ------------------------------------------------------------------------------------------


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records to `path` through a temp file + rename (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    return out


def score(task: str, predictions: list[dict[str, Any]], refs: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of `predictions` against `refs`, joined by id. A reference without a prediction scores
    as wrong (`n_missing`); predictions for unknown ids are counted (`n_unexpected`) and ignored."""
    by_id: dict[str, dict[str, Any]] = {}
    for p in predictions:
        if "id" not in p:
            raise ValueError("a prediction record has no 'id'")
        if str(p["id"]) in by_id:
            raise ValueError(f"duplicate prediction id {p['id']!r}")
        by_id[str(p["id"])] = p
    ref_ids = {str(r["id"]) for r in refs}
    joined = []
    missing = 0
    for r in refs:
        p = by_id.get(str(r["id"]))
        missing += p is None
        joined.append({**r, "prediction": None if p is None else p.get("prediction")})
    result = aggregate(joined)
    # Scored as the AdaMLLM reference code does, to compare with the paper's tables (labelled in reports).
    result["reference_metrics"] = reference_aggregate(joined)
    result.update(task=task, n_rejected=result["n_rejected"] - missing, n_missing=missing,
                  n_unexpected=len(set(by_id) - ref_ids))
    return result
