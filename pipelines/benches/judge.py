"""Judge throughput with prefix caching on vs off (`pipelines/bench.py filter`).

Both engines judge the same prompts, built one after the other in this process; engine start and a
full-size warm-up batch (different items, same few-shot prefix) are excluded; each engine then judges
`repeats` batches of fresh items and the median batch time counts. Prints one JSON
object with items/s for each setting and the ratio on / off.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from typing import Any

from filters.judge import CHOICES, label_of, load_prompt, render
from pipelines.core.resources import EngineResources
from pipelines.core.engines import GenRequest, SamplingSettings, make_engine

log = logging.getLogger(__name__)

_SUBJECTS = ("stain", "lesion", "nodule", "noodle", "sauce", "fracture", "cell", "plate", "vessel", "crust")
_COLORS = ("brown", "blue", "red", "pale", "dark", "golden", "green", "white")


def bench_items(n: int, offset: int = 0) -> list[dict[str, str]]:
    """Distinct deterministic triplets (no two share a suffix, so only the few-shot prefix is shared)."""
    items = []
    for i in range(offset, offset + n):
        s, c = _SUBJECTS[i % len(_SUBJECTS)], _COLORS[(i // len(_SUBJECTS)) % len(_COLORS)]
        items.append({
            "instruction": f"What color is the {s} in region {i}?",
            "informative": f"Region {i} shows the {s} clearly. Its surface looks {c} under this light.",
            "precise": c.capitalize() if i % 3 else _COLORS[(i + 1) % len(_COLORS)].capitalize(),
        })
    return items


def _requests(template: str, items: list[dict[str, str]]) -> list[GenRequest]:
    return [GenRequest(prompt=render(template, **it), choices=list(CHOICES)) for it in items]


def time_engine(model: str, res: EngineResources, *, prefix_caching: bool, template: str,
                runs: list[list[dict]], warmup: list[dict], max_model_len: int) -> dict[str, Any]:
    """Start an engine, judge `warmup` (untimed), then time each batch in `runs`; report the median."""
    t0 = time.perf_counter()
    engine = make_engine(model, res, sampling=SamplingSettings(max_tokens=8), multimodal=False,
                         max_model_len=max_model_len, enable_prefix_caching=prefix_caching, backend="vllm")
    start_s = time.perf_counter() - t0
    times, labels, n_tokens = [], [], 0
    try:
        engine.generate(_requests(template, warmup))
        for items in runs:
            reqs = _requests(template, items)
            t1 = time.perf_counter()
            results = engine.generate(reqs)
            times.append(time.perf_counter() - t1)
            labels += [label_of(r) for r in results]
            n_tokens = sum(r.n_prompt_tokens for r in results)
    finally:
        engine.close()
        del engine
        gc.collect()
    seconds = statistics.median(times)
    n = len(runs[0])
    return {
        "prefix_caching": prefix_caching,
        "engine_start_s": round(start_s, 2),
        "seconds_per_run": [round(t, 3) for t in times],
        "median_seconds": round(seconds, 3),
        "items_per_s": round(n / seconds, 2),
        "prompt_tokens_per_s": round(n_tokens / seconds, 1),
        "labels": labels,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench.py filter", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny://judge", help="Judge model (hub id, path or tiny://judge).")
    ap.add_argument("--prompt", default="consistency_v1", help="Judge prompt name or path.")
    ap.add_argument("--items", type=int, default=200, help="Timed items per engine.")
    ap.add_argument("--repeats", type=int, default=3, help="Timed batches per engine (median reported).")
    ap.add_argument("--max-model-len", type=int, default=2048, help="Engine context length.")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="Where the engine runs.")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3, help="vLLM memory fraction.")
    ap.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                    help="Skip graph compilation (faster engine start; same for both settings).")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from pipelines.refs import resolve_model

    model = resolve_model(args.model)
    res = EngineResources(device=args.device, gpu_memory_utilization=args.gpu_memory_utilization,
                          enforce_eager=args.enforce_eager)
    template = load_prompt(args.prompt)
    # A full-size warm-up batch (its own items), then `repeats` timed batches of fresh items; the same for both.
    warmup = bench_items(args.items)
    runs = [bench_items(args.items, offset=args.items * (k + 1)) for k in range(args.repeats)]
    on, off = (time_engine(model, res, prefix_caching=flag, template=template, runs=runs, warmup=warmup,
                           max_model_len=args.max_model_len) for flag in (True, False))
    on_labels, off_labels = on.pop("labels"), off.pop("labels")
    same = sum(a == b for a, b in zip(on_labels, off_labels, strict=True)) / len(on_labels)
    result = {
        "bench": "filter.judge_prefix_caching",
        "model": args.model,
        "items": args.items,
        "repeats": args.repeats,
        "prefix_chars": len(template.split("{instruction}")[0]),
        "on": on,
        "off": off,
        "ratio": round(on["items_per_s"] / off["items_per_s"], 2),
        "same_labels": round(same, 3),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
