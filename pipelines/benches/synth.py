"""`pipelines/bench.py synth`: the whole synth pipeline against the same engine used bare, made fair (issue 16).

Pipeline side (A): read -> ingest -> prompt -> engine -> parse -> Parquet through Ray Data, with
`rows_per_shard` small enough that Parquet parts are written and committed inside the timed window.
Bare side (B): the pipeline's own stage class (`SynthStage`, so the same engine construction) in a Ray
actor with the same resources and runtime env as the pipeline's engine actors, fed requests built from
the same ingested rows, on **the same batch lists** the pipeline's engine got (recorded from run A), or,
as vLLM's own best case (C), in one `generate` call over all prompts. Images are decoded and prompts
rendered before B's timed window, so B is the engine alone.

Both rates exclude the first batch (engine warm-up; Ray start): A times from the first batch reaching the
sink to the last; B and C time everything after a warm-up `generate` of the first batch list. Runs
alternate A, B, C, A, B, C... (`--repeats`, default 3) and report min/median/max. Outputs are compared by
id under greedy decoding (`same_text`: fraction of identical texts; B's batches match A's exactly, C
batches differently, where tiny numeric differences can flip a token).

The tiny preset sets `ignore_eos` and no stop string (the random tiny models rarely emit end-of-turn), so
every output has max_tokens tokens. For realistic stopping use the trained miniworld synthesizer with the
`tiny_eos` preset (`synth.model=miniworld://synthesizer synth.preset=tiny_eos`), which stops at the end it was
tuned to emit; the bare sides report output tokens per image (min/median/max) and the fraction that stopped
before max_tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _config(src: Path, extra: list[str]):
    from pipelines.config import load_config
    from pipelines.refs import resolve_run

    cfg = load_config("biomed", "tiny", [f"input.path={src}", "stages=[ingest, synth]", *extra])
    return resolve_run(cfg)


def pipeline_run(cfg, out: Path) -> dict[str, Any]:
    """One pipeline run: steady-state images/s, the engine's batch lists (ids) and texts by id."""
    from ray.data import DataContext

    from filters.stats import FilterStats
    from pipelines.pipeline import build_dataset, init_ray, open_output
    from pipelines.sinks import DatasetSink

    manifest = open_output(cfg, out, resume=False, overwrite=True)
    init_ray(cfg)
    # Tiny sample images are ~30 KB: with the run's block cap the whole input would be one block (one ingest
    # task, one engine call list, nothing to time in steady state); real 512-1024 px images split as this does.
    DataContext.get_current().target_max_block_size = 64 << 10
    sink = DatasetSink(out, manifest, domain=cfg.domain, rows_per_shard=cfg.rows_per_shard, stats=FilterStats)
    stamps: list[tuple[float, int, int]] = []
    by_call: dict[tuple[float, float], list[str]] = {}  # the engine's batch lists: rows sharing a synth span
    texts: dict[str, str] = {}
    for batch in build_dataset(cfg).iter_batches(batch_size=None, batch_format="numpy"):
        sink.add_batch(batch)  # Parquet parts are written and committed here, inside the window
        stamps.append((time.monotonic(), len(batch["id"]), int(sum(int(x) for x in batch["n_output_tokens"]))))
        for i, t, r, sp in zip(batch["id"], batch["synth_text"], batch["reject_stage"], batch["spans"]):
            if not r:
                texts[str(i)] = str(t)
                by_call.setdefault(tuple(json.loads(sp)["synth"]), []).append(str(i))
    sink.close()
    if len(stamps) < 2:
        raise SystemExit(f"only {len(stamps)} batch reached the sink: raise --n so a steady state can be timed")
    batches = [by_call[k] for k in sorted(by_call)]
    n = sum(s[1] for s in stamps[1:])
    dt = stamps[-1][0] - stamps[0][0]
    return {"images": n, "seconds": dt, "images_per_s": n / dt, "tokens_per_s": sum(s[2] for s in stamps[1:]) / dt,
            "parts_written": len(manifest.data["parts"]["data"]), "batches": batches, "texts": texts}


class BareSynth:
    """Ray actor: the pipeline's SynthStage (same engine, same process kind), driven without Ray Data."""

    def __init__(self, cfg) -> None:
        from synth.stage import SynthStage

        self.stage = SynthStage(cfg.synth, cfg.input.max_image_pixels)

    def run(self, batches: list[list[dict[str, Any]]], single: bool) -> dict[str, Any]:
        reqs = [[self.stage._request(r) for r in b] for b in batches]  # decode + render outside the window
        ids = [[r["id"] for r in b] for b in batches]
        self.stage.engine.generate(reqs[0])  # warm-up, excluded like the pipeline's first batch
        t0 = time.monotonic()
        if single:
            outs = self.stage.engine.generate([q for b in reqs[1:] for q in b])
        else:
            outs = [o for b in reqs[1:] for o in self.stage.engine.generate(b)]
        dt = time.monotonic() - t0
        flat = [i for b in ids[1:] for i in b]
        return {"images": len(outs), "seconds": dt, "images_per_s": len(outs) / dt,
                "tokens_per_s": sum(o.n_output_tokens for o in outs) / dt,
                "output_tokens": [o.n_output_tokens for o in outs],
                "stopped": sum(o.finish_reason == "stop" for o in outs) / max(len(outs), 1),
                "texts": {i: o.text for i, o in zip(flat, outs, strict=True)}}


def ingested_rows(cfg) -> dict[str, dict[str, Any]]:
    """The rows the synth stage gets, by id: read + ingest on the driver (outside every timed window)."""
    from pipelines.core.rows import batch_to_rows, rows_to_batch
    from pipelines.ingest import IngestStage
    from pipelines.pipeline import stage_calls
    from pipelines.readers.json_reader import json_rows

    (ingest,) = [c for c in stage_calls(cfg) if c.cls is IngestStage]  # built as the pipeline builds it
    rows = batch_to_rows(IngestStage(**ingest.kwargs)(rows_to_batch(json_rows(cfg.input))))
    return {r["id"]: r for r in rows if not r["reject_stage"]}


def _spread(xs: list[float]) -> dict[str, float]:
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def _same(a: dict[str, str], b: dict[str, str]) -> float:
    common = set(a) & set(b)
    return sum(a[i] == b[i] for i in common) / max(len(common), 1)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py synth", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="Images per run.")
    p.add_argument("--repeats", type=int, default=3, help="Runs of each side, alternating A, B, C.")
    p.add_argument("overrides", nargs="*", help="Config overrides (key=value) on top of biomed + tiny.")
    args = p.parse_args(argv)

    import ray

    from pipelines.core.engines import engine_pool_options
    from pipelines.fixtures.sample_data import generate

    work = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    src = generate("biomed", work / "src", n=args.n, seed=0)
    # ~8 Parquet parts per run, so writing and committing them falls inside the timed window
    cfg = _config(src, [f"rows_per_shard={max(8, args.n // 8)}", *args.overrides])
    rows = ingested_rows(cfg)
    opts = engine_pool_options(cfg.synth, cfg.synth.batch_size)
    actor_opts = {k: opts[k] for k in ("num_cpus", "num_gpus") if k in opts}
    runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "bare_same_batches": [], "bare_single_generate": []}
    for k in range(args.repeats):
        a = pipeline_run(cfg, work / f"out{k}")  # init_ray here: same runtime env for the bare actor below
        runs["pipeline"].append(a)
        actor = ray.remote(**actor_opts)(BareSynth).remote(cfg)
        batch_rows = [[rows[i] for i in b] for b in a["batches"] if b]
        for name, single in (("bare_same_batches", False), ("bare_single_generate", True)):
            r = ray.get(actor.run.remote(batch_rows, single))
            r["same_text"] = _same(a["texts"], r["texts"])
            runs[name].append(r)
        ray.kill(actor)
    result: dict[str, Any] = {"model": cfg.synth.model, "engine": cfg.synth.engine, "batch_size": cfg.synth.batch_size,
                              "max_tokens": cfg.synth.max_tokens, "n": args.n, "repeats": args.repeats,
                              "rows_per_shard": cfg.rows_per_shard, "parts_written": runs["pipeline"][-1]["parts_written"]}
    for name, rs in runs.items():
        result[name] = {"images_per_s": _spread([r["images_per_s"] for r in rs]),
                        "tokens_per_s": _spread([r["tokens_per_s"] for r in rs])}
        if "same_text" in rs[0]:
            result[name]["same_text"] = min(r["same_text"] for r in rs)
        if "output_tokens" in rs[0]:  # realistic stopping: lengths vary when the synthesizer ends by itself
            result[name]["output_tokens_per_image"] = _spread([float(x) for r in rs for x in r["output_tokens"]])
            result[name]["stopped_before_max_tokens"] = round(min(r["stopped"] for r in rs), 3)
    med = lambda name: result[name]["images_per_s"]["median"]
    result["ratio_vs_bare_same_batches"] = med("pipeline") / med("bare_same_batches")
    result["ratio_vs_bare_single_generate"] = med("pipeline") / med("bare_single_generate")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
