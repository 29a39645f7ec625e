"""Judge throughput with prefix caching on vs off, through the judge stage and the engine alone (`bench.py filter`).

Reworked per issue 16. Two `ConsistencyJudge` stages (the real stage class, as the pipeline builds it from a
`JudgeConfig`) are alive at once, one with prefix caching and one without, so neither pays an engine start in
the timed window and both see the same machine load. Each repeat judges fresh rows, in alternating order
(on, off, on, off, ...):

- stage: the rows (one image each, its tasks as JSON) go through `stage(batch)`: render, count prompt tokens,
  one engine call, label and score parsing, keep/reject bookkeeping;
- engine alone: other fresh items, requests rendered before the window, one `engine.generate` call on the
  same stage's engine.

Fresh items each time, because vLLM's prefix cache would otherwise hold a whole repeated prompt. One warm-up
batch per side (its own items) is excluded; on the cached side it computes the shared prefix once, as the first
batch of a pipeline replica does. Reported: items/s min/median/max per side and the ratio of medians.

Triplets are the miniature world's, labelled by construction (`pipelines.experiments.miniworld`): every task of
an image, its yes/no/open variants. `--lead K` prepends K other informative answers of the same image to each
informative answer (the conclusion stays last), so informative answers have several sentences like the paper's;
the mean informative length and prompt suffix tokens are reported. Agreement: the chosen label and its
log-probability (the stage's `score` is its exp) of every task, cached vs uncached, compared by (row id, task).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import statistics
import sys
import time
from typing import Any

from filters.config import JudgeConfig
from filters.judge import (
    CHOICES,
    ConsistencyJudge,
    label_of,
    render,
    shared_prefix,
)
from pipelines.benches.common import spread
from pipelines.core.engines import GenRequest
from pipelines.core.rows import (
    batch_to_rows,
    empty_row,
    get_tasks,
    rows_to_batch,
    set_tasks,
)
from pipelines.experiments.miniworld import worlds

log = logging.getLogger(__name__)
MINIWORLD_PROMPT = "pipelines.experiments.miniworld:judge_prompt.txt"


def image_tasks(index: int, lead: int, seed: int = 7) -> list[dict[str, str]]:
    """The labelled triplets of general image `index` (contradictions from image index+1), with `lead` other
    informative answers of the same image before each informative answer."""
    rng = random.Random(seed * 1_000_003 + index)
    attrs = worlds.make_general(index, seed=seed)[0]
    other = worlds.make_general(index + 1, seed=seed)[0]
    triplets = worlds.judge_triplets(attrs, other, rng)
    pool = sorted({t["informative"] for t in triplets})
    out = []
    for t in triplets:
        before = rng.sample([p for p in pool if p != t["informative"]], min(lead, len(pool) - 1))
        out.append({k: t[k] for k in ("instruction", "precise", "label")}
                   | {"informative": " ".join([*before, t["informative"]])})
    return out


def bench_rows(n_items: int, start: int, lead: int) -> tuple[list[dict[str, Any]], int]:
    """Whole images from image `start` on until >= n_items tasks: (rows, next image index)."""
    rows, n, i = [], 0, start
    while n < n_items:
        tasks = image_tasks(i, lead)
        row = empty_row(id=f"img{i}")
        set_tasks(row, [{k: v for k, v in t.items() if k != "label"} for t in tasks])  # the truth stays out
        rows.append(row)
        n, i = n + len(tasks), i + 1
    return rows, i


def truth_by_key(images: list[int], lead: int) -> dict[str, str]:
    """Label by construction of every task of these images, keyed as `time_stage` keys its judgments."""
    return {json.dumps([f"img{i}", t["instruction"], t["informative"], t["precise"]]): t["label"]
            for i in images for t in image_tasks(i, lead)}


def _tasks_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for r in rows for t in get_tasks(r)]


def time_stage(stage: ConsistencyJudge, rows: list[dict[str, Any]]) -> tuple[float, dict[str, tuple]]:
    """Seconds for one stage call on `rows`; (label, log-prob) by (row id, task index)."""
    batch = rows_to_batch(rows)
    t0 = time.perf_counter()
    out = batch_to_rows(stage(batch))
    dt = time.perf_counter() - t0
    judged: dict[str, tuple] = {}
    for r in out:  # kept tasks and rejects: by row id and the triplet (rejects carry no task index)
        for t in get_tasks(r) + json.loads(r["task_rejects"] or "[]"):
            key = json.dumps([r["id"], t["instruction"], t["informative"], t["precise"]])
            judged[key] = (t["label"] or None, None if t["score"] is None else math.log(t["score"]))
    return dt, judged


def time_engine(stage: ConsistencyJudge, rows: list[dict[str, Any]]) -> tuple[float, dict[str, tuple]]:
    """Seconds for one `generate` on the stage's engine over prebuilt requests; (label, log-prob) by position."""
    reqs = [GenRequest(prompt=render(stage.template, t["instruction"], t["informative"], t["precise"]),
                       choices=list(CHOICES)) for t in _tasks_of(rows)]
    t0 = time.perf_counter()
    results = stage.engine.generate(reqs)
    dt = time.perf_counter() - t0
    return dt, {str(i): (label_of(r), r.choice_logprob) for i, r in enumerate(results)}


def agreement(a: dict[str, tuple], b: dict[str, tuple], tol: float) -> dict[str, Any]:
    """Same label, and |log-prob difference| <= tol, over the keys both judged."""
    keys = sorted(set(a) & set(b))
    diffs = [abs(a[k][1] - b[k][1]) for k in keys if a[k][1] is not None and b[k][1] is not None]
    return {"compared": len(keys), "missing": len(set(a) ^ set(b)),
            "same_label": round(sum(a[k][0] == b[k][0] for k in keys) / max(len(keys), 1), 4),
            "logprob_within_tol": round(sum(d <= tol for d in diffs) / max(len(diffs), 1), 4),
            "logprob_max_abs_diff": round(max(diffs, default=0.0), 5),
            "logprob_median_abs_diff": round(statistics.median(diffs) if diffs else 0.0, 6)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench.py filter", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="miniworld://judge",
                    help="Judge model (hub id, path, tiny://judge, miniworld://judge).")
    ap.add_argument("--prompt", default=MINIWORLD_PROMPT,
                    help="Judge prompt: a built-in name (consistency_v1, ...), package:file.txt or a path.")
    ap.add_argument("--items", type=int, default=200, help="Tasks per timed batch (whole images, so a few more).")
    ap.add_argument("--repeats", type=int, default=3, help="Timed batches per side, alternating on/off.")
    ap.add_argument("--lead", type=int, default=3, help="Other informative answers prepended to each one.")
    ap.add_argument("--logprob-tol", type=float, default=0.05, help="Log-prob agreement tolerance (nats).")
    ap.add_argument("--max-model-len", type=int, default=0,
                    help="Engine context length (0: the model's max_position_embeddings).")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="Where the engines run.")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.2, help="vLLM memory fraction per engine.")
    ap.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                    help="Skip graph compilation (faster engine start; same for both settings).")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from pipelines.refs import resolve_model

    model = resolve_model(args.model)
    if not args.max_model_len:
        from transformers import AutoConfig

        args.max_model_len = AutoConfig.from_pretrained(model).max_position_embeddings

    def cfg(flag: bool) -> JudgeConfig:
        return JudgeConfig(model=model, prompt=args.prompt, enable_prefix_caching=flag,
                           max_model_len=args.max_model_len, device=args.device, enforce_eager=args.enforce_eager,
                           gpu_memory_utilization=args.gpu_memory_utilization)

    stages = {"on": ConsistencyJudge(cfg(True)), "off": ConsistencyJudge(cfg(False))}
    try:
        result = _measure(stages, args)
    finally:
        for s in stages.values():
            s.close()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _measure(stages: dict[str, ConsistencyJudge], args: argparse.Namespace) -> dict[str, Any]:
    nxt = 0
    warm, nxt = bench_rows(args.items, nxt, args.lead)
    warm_e, nxt = bench_rows(args.items, nxt, args.lead)
    for s in stages.values():  # untimed: the cached side computes the shared prefix here
        time_stage(s, warm)
        time_engine(s, warm_e)
    rates: dict[str, list[float]] = {f"{w}_{f}": [] for w in ("stage", "engine") for f in stages}
    judged: dict[str, dict[str, dict]] = {f"{w}_{f}": {} for w in ("stage", "engine") for f in stages}
    n_items: list[int] = []
    timed_images: list[int] = []
    for k in range(args.repeats):
        first = nxt
        rows, nxt = bench_rows(args.items, nxt, args.lead)
        timed_images += range(first, nxt)
        rows_e, nxt = bench_rows(args.items, nxt, args.lead)
        n_items.append(len(_tasks_of(rows)))
        order = ("on", "off") if k % 2 == 0 else ("off", "on")
        for flag in order:
            dt, j = time_stage(stages[flag], rows)
            rates[f"stage_{flag}"].append(len(_tasks_of(rows)) / dt)
            judged[f"stage_{flag}"].update(j)
        for flag in order:
            dt, j = time_engine(stages[flag], rows_e)
            rates[f"engine_{flag}"].append(len(_tasks_of(rows_e)) / dt)
            judged[f"engine_{flag}"].update({f"{k}:{pos}": v for pos, v in j.items()})
        log.info("repeat %d: %s", k, {s: round(v[-1], 1) for s, v in rates.items()})
    template = stages["on"].template
    tok = stages["on"].engine.tokenizer
    sample = [t for i in range(len(warm)) for t in image_tasks(i, args.lead)]  # the warm-up rows, with truth
    suffix_tokens = [len(tok(render(template, t["instruction"], t["informative"], t["precise"]))["input_ids"])
                     for t in sample]
    prefix_tokens = len(tok(shared_prefix(template))["input_ids"])
    med = {s: statistics.median(v) for s, v in rates.items()}
    labels = [lab for lab, _ in judged["stage_off"].values()]
    truth = [t["label"] for t in sample]
    correct = [judged["stage_off"][k][0] == lab for k, lab in truth_by_key(timed_images, args.lead).items()]
    return {
        "bench": "filter.judge_prefix_caching", "model": args.model, "prompt": args.prompt, "repeats": args.repeats,
        "items_per_batch": n_items, "lead": args.lead, "order": "alternating on/off, fresh items each batch",
        "prefix_chars": len(shared_prefix(template)), "prefix_tokens": prefix_tokens,
        "suffix_tokens_mean": round(statistics.mean(suffix_tokens) - prefix_tokens, 1),
        "informative_chars_mean": round(statistics.mean(len(t["informative"]) for t in sample), 1),
        "truth_labels": {lab: truth.count(lab) for lab in sorted(set(truth))},
        "judge_labels_uncached": {str(lab): labels.count(lab) for lab in sorted(set(labels), key=str)},
        "judge_accuracy_uncached": round(sum(correct) / max(len(correct), 1), 4),
        **{f"{s}_items_per_s": {k: round(v, 2) for k, v in spread(x).items()} for s, x in rates.items()},
        "ratio_stage_on_off": round(med["stage_on"] / med["stage_off"], 3),
        "ratio_engine_on_off": round(med["engine_on"] / med["engine_off"], 3),
        "stage_over_engine": {f: round(med[f"stage_{f}"] / med[f"engine_{f}"], 3) for f in stages},
        "agreement_stage": agreement(judged["stage_on"], judged["stage_off"], args.logprob_tol),
        "agreement_engine": agreement(judged["engine_on"], judged["engine_off"], args.logprob_tol),
        "logprob_tol": args.logprob_tol,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
