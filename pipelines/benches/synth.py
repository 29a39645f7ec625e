"""`pipelines/bench.py synth`: the whole synth pipeline against bare `vllm.LLM.generate`, and its memory.

(a) Throughput ratio: images/s of the whole pipeline (read -> ingest/decode -> prompt -> vLLM -> parse ->
    Parquet, through Ray Data) over images/s of the same engine's bare `generate` on the same prompts and
    images already in memory. Both are steady-state rates: the first batch (engine warm-up, Ray start)
    is excluded from each, by timing from the first finished batch to the last.
(b) Memory: peak RSS of the whole process tree (driver, Ray, engine processes) of a pipeline run at N
    and at 10N images; streaming means the ratio should stay near 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def peak_rss_of(cmd: list[str], interval: float = 0.2) -> tuple[int, float]:
    """Run `cmd`, sampling the RSS of its process tree; return (peak bytes, wall seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(interval)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return peak, time.monotonic() - t0


def _config(src: Path, extra: list[str]):
    from pipelines.config import load_config
    from pipelines.refs import resolve_run

    cfg = load_config("biomed", "tiny", [f"input.path={src}", "stages=[ingest, synth]", *extra])
    return resolve_run(cfg, Path(tempfile.gettempdir()))


def bare_generate_rate(cfg, src: Path) -> dict:
    """Images/s of bare engine.generate over prompts and decoded images already in memory."""
    from PIL import Image

    from pipelines.core.images import resize_max_pixels
    from pipelines.core.engines import GenRequest, make_engine
    from synth.prompt import load_preset, render_prompt
    from synth.stage import sampling_settings

    pairs = json.loads(src.read_text())
    preset = load_preset(cfg.synth.preset)
    engine = make_engine(cfg.synth.model, cfg.synth, sampling=sampling_settings(cfg.synth), multimodal=True,
                         max_model_len=cfg.synth.max_model_len, limit_images=1)
    reqs = []
    for rec in pairs:
        img = resize_max_pixels(Image.open(src.parent / rec["images"][0]).convert("RGB"), cfg.synth.max_pixels)
        caption = rec["messages"][1]["content"]
        reqs.append(GenRequest(prompt=render_prompt(preset, caption, None, engine.processor), images=[img]))
    bs = cfg.synth.batch_size
    batches = [reqs[i : i + bs] for i in range(0, len(reqs), bs)]
    engine.generate(batches[0])  # warm-up, excluded as in the pipeline measurement
    t0 = time.monotonic()
    n_tok = 0
    for b in batches[1:]:
        n_tok += sum(r.n_output_tokens for r in engine.generate(b))
    dt = time.monotonic() - t0
    engine.close()
    n = sum(len(b) for b in batches[1:])
    return {"images": n, "seconds": round(dt, 3), "images_per_s": n / dt, "tokens_per_s": n_tok / dt}


def pipeline_rate(cfg, out: Path) -> dict:
    """Steady-state images/s of the whole pipeline, from the first batch reaching the sink to the last."""
    from filters.stats import FilterStats
    from pipelines.pipeline import build_dataset, init_ray, open_output
    from pipelines.sinks import DatasetSink

    manifest = open_output(cfg, out, resume=False, overwrite=True)
    init_ray(cfg)
    sink = DatasetSink(out, manifest, domain=cfg.domain, rows_per_shard=cfg.rows_per_shard, stats=FilterStats)
    stamps: list[tuple[float, int, int]] = []
    for batch in build_dataset(cfg, frozenset()).iter_batches(batch_size=None, batch_format="numpy"):
        sink.add_batch(batch)
        n_tok = int(sum(int(x) for x in batch["n_output_tokens"]))
        stamps.append((time.monotonic(), len(batch["id"]), n_tok))
    sink.close()
    t_first = stamps[0][0]
    n = sum(s[1] for s in stamps[1:])
    tok = sum(s[2] for s in stamps[1:])
    dt = stamps[-1][0] - t_first
    return {"images": n, "seconds": round(dt, 3), "images_per_s": n / dt, "tokens_per_s": tok / dt,
            "stages": manifest.data["stages"]}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py synth", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="Images for the throughput run and the small RSS run.")
    p.add_argument("--scale", type=int, default=10, help="The large RSS run uses n * scale images.")
    p.add_argument("--skip-rss", action="store_true", help="Only measure throughput.")
    p.add_argument("overrides", nargs="*", help="Config overrides (key=value) on top of biomed + tiny.")
    args = p.parse_args(argv)

    from pipelines.fixtures.sample_data import generate

    work = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    src = generate("biomed", work / "src", n=args.n, seed=0)
    cfg = _config(src, args.overrides)
    bare = bare_generate_rate(cfg, src)
    pipe = pipeline_rate(cfg, work / "out")
    result = {
        "model": cfg.synth.model, "engine": cfg.synth.engine, "batch_size": cfg.synth.batch_size,
        "max_tokens": cfg.synth.max_tokens, "bare": bare, "pipeline": {k: v for k, v in pipe.items() if k != "stages"},
        "throughput_ratio": pipe["images_per_s"] / bare["images_per_s"],
    }
    if not args.skip_rss:
        run_py = Path(__file__).resolve().parents[1] / "pipelines" / "run.py"
        rss = {}
        for n in (args.n, args.n * args.scale):
            s = generate("biomed", work / f"src{n}", n=n, seed=1)
            cmd = [sys.executable, str(run_py), "--domain", "biomed", "--profile", "tiny", "--input", str(s),
                   "--stages", "ingest,synth", "--out", str(work / f"rss{n}"), "--no-progress", *args.overrides]
            peak, wall = peak_rss_of(cmd)
            rss[n] = {"peak_rss_mib": round(peak / 2**20, 1), "wall_s": round(wall, 1)}
        result["rss"] = rss
        result["rss_ratio"] = rss[args.n * args.scale]["peak_rss_mib"] / rss[args.n]["peak_rss_mib"]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
