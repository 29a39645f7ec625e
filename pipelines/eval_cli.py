"""CLI: `vlm-adapt-eval {run,score,report,tiny} ...` (see `--help` of each command).

Bad input (missing file, unknown task, malformed JSONL) exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from posttrain.eval.config import EvalConfig
from pipelines.core.resources import EngineResources
from posttrain.eval.tasks import TASKS, UnknownTaskError, get_task

log = logging.getLogger(__name__)


class BadInput(Exception):
    """Raised for user errors; main() prints it on one line and exits 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlm-adapt-eval", description="Benchmark evaluation of VLMs.")
    sub = p.add_subparsers(dest="command", required=True)
    d = EvalConfig()

    r = sub.add_parser("run", help="Generate predictions for one task.")
    r.add_argument("--task", required=True, help=f"Task name: {', '.join(sorted(TASKS))}.")
    r.add_argument("--model", required=True, help="Model: hub id, local path or tiny://vlm.")
    r.add_argument("--data", required=True, help="Local copy of the benchmark in its published layout.")
    r.add_argument("--out", required=True, help="Predictions JSONL to write.")
    r.add_argument("--refs-out", help="Also write the references JSONL here (default: <out>.refs.jsonl).")
    r.add_argument("--engine", choices=["vllm", "transformers"], default=d.engine, help="Generation backend.")
    r.add_argument("--split", default=d.split, help="Benchmark split.")
    r.add_argument("--limit", type=int, default=d.limit, help="Evaluate at most this many examples.")
    r.add_argument("--batch-size", type=int, default=d.batch_size, help="Prompts per generation call.")
    r.add_argument("--prompt-style", choices=["project", "adamllm"], default=d.prompt_style,
                   help="Task prompts: the project's, or the AdaMLLM benchmark's input format.")
    r.add_argument("--max-tokens", type=int, default=d.max_tokens, help="Maximum new tokens per answer (greedy).")
    r.add_argument("--max-model-len", type=int, default=d.max_model_len, help="Engine context length.")
    r.add_argument("--gpu-memory-utilization", type=float, default=d.resources.gpu_memory_utilization,
                   help="vLLM memory fraction (on CPU: of the NUMA node's RAM).")
    r.add_argument("--device", choices=["auto", "cuda", "cpu"], default=d.resources.device, help="Engine device.")
    r.add_argument("--dtype", default=d.resources.dtype, help="Model dtype ('auto', 'bfloat16', 'float32').")

    s = sub.add_parser("score", help="Score a predictions JSONL against a references JSONL; prints JSON.")
    s.add_argument("--task", required=True, help="Task name (recorded in the output).")
    s.add_argument("--pred", required=True, help="Predictions JSONL (records with id and prediction).")
    s.add_argument("--ref", required=True, help="References JSONL (id, answer, answer_type, choices).")
    s.add_argument("--out", help="Also write the scores JSON here.")

    rep = sub.add_parser("report", help="Markdown/HTML table and bar chart comparing models.")
    rep.add_argument("--result", action="append", required=True, metavar="NAME=SCORES.json",
                     help="A model's scores (a score JSON or a list of them); repeat per model or task.")
    rep.add_argument("--out", required=True, help="Folder for report.md, report.html, report.png.")

    t = sub.add_parser("tiny", help="Build the tiny SLAKE-like / PMC-VQA-like eval set from sample data.")
    t.add_argument("--out", required=True, help="Output folder.")
    t.add_argument("--n", type=int, default=8, help="Number of sample images.")
    t.add_argument("--seed", type=int, default=0, help="Seed.")
    return p


def _need_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{what} not found: {path}")
    return p


def cmd_run(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.refs import resolve_model
    from posttrain.eval.runner import chat_renderer, predict, write_jsonl
    from pipelines.core.engines import SamplingSettings, make_engine

    try:
        cfg = EvalConfig(engine=a.engine, split=a.split, limit=a.limit, batch_size=a.batch_size,
                         max_tokens=a.max_tokens, max_model_len=a.max_model_len)
        cfg.resources = EngineResources.model_validate({**cfg.resources.model_dump(), "device": a.device,
                                                        "gpu_memory_utilization": a.gpu_memory_utilization,
                                                        "dtype": a.dtype})
    except ValidationError as e:
        raise BadInput(f"bad option value: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
    spec = get_task(a.task, a.prompt_style)
    if not Path(a.data).exists() and not (spec.hub_id and a.data == spec.hub_id):
        raise BadInput(f"data not found: {a.data}")
    loaded = spec.load(a.data, split=cfg.split, limit=cfg.limit)
    if not loaded.examples:
        raise BadInput(f"no usable examples for {a.task} in {a.data} ({len(loaded.rejects)} rejects)")
    engine = make_engine(
        resolve_model(a.model), cfg.resources,
        sampling=SamplingSettings(max_tokens=cfg.max_tokens, temperature=0.0),
        multimodal=True, max_model_len=cfg.max_model_len, backend=cfg.engine,
    )
    try:
        records = predict(spec, loaded.examples, engine, chat_renderer(engine.processor),
                          batch_size=cfg.batch_size, max_model_len=cfg.max_model_len, max_tokens=cfg.max_tokens)
    finally:
        engine.close()
    out = write_jsonl(a.out, records)
    refs = write_jsonl(a.refs_out or f"{a.out}.refs.jsonl", [e.ref() for e in loaded.examples])
    rejects = write_jsonl(f"{a.out}.rejects.jsonl", loaded.rejects)
    return {"task": a.task, "predictions": str(out), "refs": str(refs), "load_rejects": str(rejects),
            "n": len(records), "n_load_rejects": len(loaded.rejects)}


def cmd_score(a: argparse.Namespace) -> dict[str, Any]:
    from posttrain.eval.runner import read_jsonl, score

    get_task(a.task)
    preds = read_jsonl(_need_file(a.pred, "predictions file"))
    refs = read_jsonl(_need_file(a.ref, "references file"))
    result = score(a.task, preds, refs)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def cmd_report(a: argparse.Namespace) -> dict[str, Any]:
    from posttrain.eval.report import write_report

    results: dict[str, list[dict[str, Any]]] = {}
    for item in a.result:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--result {item!r} is not NAME=SCORES.json")
        data = json.loads(_need_file(path, "scores file").read_text())
        scores = data if isinstance(data, list) else [data]
        if not all(isinstance(s, dict) and "task" in s and "metrics" in s for s in scores):
            raise BadInput(f"{path}: expected score JSON objects with 'task' and 'metrics'")
        results.setdefault(name, []).extend(scores)
    return {k: str(v) for k, v in write_report(results, a.out).items()}


def cmd_tiny(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.fixtures.tiny_eval import build_tiny_eval

    return {k: str(v) for k, v in build_tiny_eval(a.out, n=a.n, seed=a.seed).items()}


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    cmds = {"run": cmd_run, "score": cmd_score, "report": cmd_report, "tiny": cmd_tiny}
    try:
        result = cmds[a.command](a)
    except (BadInput, UnknownTaskError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        if a.command == "run":
            raise  # engine / model problems keep their traceback
        # malformed input files (bad JSONL, unknown answer_type, reference not among the options)
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
