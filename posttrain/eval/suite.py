"""The pipeline's `eval` stage: every configured task, every model (base vs adapted), one report.

Writes under OUT/eval/: `<model>/<task>.pred.jsonl` (+ refs, rejects), `<model>/<task>.scores.json`,
and the comparison `report.{md,html,png,json}`. Model and data references arrive resolved to paths
(`eval.data_dir: tiny://biomed` is built into a folder by the CLI edge, `pipelines.refs`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from posttrain.eval.config import EvalConfig

log = logging.getLogger(__name__)


def task_data(cfg: EvalConfig, out_dir: Path) -> dict[str, Path | str]:
    """Where each task's data lives: `data_dir/<task>`, or the task's hub id."""
    from posttrain.eval.tasks import get_task

    paths: dict[str, Path | str] = {}
    for t in cfg.tasks:
        spec = get_task(t)
        local = Path(cfg.data_dir) / t if cfg.data_dir else None
        if local is not None and local.exists():
            paths[t] = local
        elif spec.hub_id:
            paths[t] = spec.hub_id
        else:
            raise FileNotFoundError(f"eval task {t}: no local copy at {local} and no hub id")
    return paths


def evaluate_model(cfg: EvalConfig, name: str, model_ref: str, data: dict[str, Path | str], out_dir: Path) -> list[dict]:
    """Predict and score every task with one model (one engine for all tasks)."""
    from posttrain.eval.runner import chat_renderer, predict, score, write_jsonl
    from posttrain.eval.tasks import get_task
    from pipelines.core.engines import SamplingSettings, make_engine

    engine = make_engine(model_ref, cfg.resources, multimodal=True, backend=cfg.engine,
                         sampling=SamplingSettings(max_tokens=cfg.max_tokens, temperature=0.0),
                         max_model_len=cfg.max_model_len)
    results = []
    try:
        for task, path in data.items():
            spec = get_task(task, cfg.prompt_style)
            loaded = spec.load(path, split=cfg.split, limit=cfg.limit)
            preds = predict(spec, loaded.examples, engine, chat_renderer(engine.processor), batch_size=cfg.batch_size,
                            max_model_len=cfg.max_model_len, max_tokens=cfg.max_tokens)
            refs = [e.ref() for e in loaded.examples]
            d = out_dir / name
            write_jsonl(d / f"{task}.pred.jsonl", preds)
            write_jsonl(d / f"{task}.refs.jsonl", refs)
            write_jsonl(d / f"{task}.rejects.jsonl", loaded.rejects)
            res = score(task, preds, refs)
            (d / f"{task}.scores.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
            results.append(res)
            log.info("eval %s on %s: %s", name, task, res.get("metrics"))
    finally:
        engine.close()
    return results


def run_eval(cfg: EvalConfig, models: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """Evaluate each named model on every task and write the comparison report; returns its paths."""
    from posttrain.eval.report import write_report

    if not cfg.tasks:
        raise ValueError("eval.tasks is empty: name the benchmark tasks to run")
    data = task_data(cfg, out_dir)
    results = {name: evaluate_model(cfg, name, ref, data, out_dir) for name, ref in models.items()}
    return {k: str(v) for k, v in write_report(results, out_dir).items()}
