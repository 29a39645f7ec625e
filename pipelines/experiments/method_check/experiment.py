"""Method check on the miniature world (issue 9): does synthesis + filtering + single-stage post-training
improve a small generalist on a domain it has only captions for?

Conditions, each evaluated on the held-out domain test set (and the validation set):

    base          the generalist (pre-trained on the general world only)
    captions      SFT on domain captions only                    (mix.strategy=caption_only)
    filtered      SFT on synthetic tasks + captions, single stage, consistency filter on (the method)
    unfiltered    the same without the filter                    (compose.mode=unfiltered)
    two_stage     captions first, then synthetic tasks           (mix.strategy=two_stage)
    momentum      instruction-free momentum-proxy tuning on captions (train.method=momentum_proxy)
    oracle        SFT on tasks written from each image's ground truth + captions, single stage (the ceiling:
                  a perfect synthesizer and judge; `method_check.oracle`)

The data sets come from the real pipeline (`pipelines.pipeline.run_dataset`: ingest -> vLLM synthesis with
the tuned miniworld synthesizer -> vLLM consistency judge (trained miniworld judge) -> compose -> mix ->
Parquet); training is `posttrain.train.train`; evaluation is `posttrain.eval.runner.predict` + `score` (greedy, with
the batched transformers engine below) on the
SLAKE-like and PMC-VQA-like sets of `pipelines.fixtures.tiny_eval`. Training seeds vary; synthesis is greedy,
so the data of a condition is the same for every seed. The summary score of a run is the mean of SLAKE open
recall, SLAKE closed accuracy and PMC-VQA accuracy.

    python pipelines/bench.py method [--out DIR] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.experiments.method_check import grounding
from pipelines.experiments.method_check.evaluation import evaluate, judge_accuracy, load_sets, prior_scores
from pipelines.experiments.method_check.learnability import general_vqa

log = logging.getLogger(__name__)

CONDITIONS = ("base", "captions", "filtered", "unfiltered", "two_stage", "momentum", "oracle")
# condition -> (pipeline overrides of the data run, train method); "base" trains nothing
DATA_RUNS: dict[str, list[str]] = {
    "captions": ["stages=[ingest,mix]", "mix.strategy=caption_only"],
    "filtered": ["mix.strategy=single_stage", "compose.mode=combined"],
    "unfiltered": ["mix.strategy=single_stage", "compose.mode=unfiltered"],
    "two_stage": ["mix.strategy=two_stage", "compose.mode=combined"],
}
TRAIN_DATA = {"captions": "captions", "filtered": "filtered", "unfiltered": "unfiltered", "two_stage": "two_stage",
              "momentum": "captions", "oracle": "oracle"}


class MethodCheckConfig(BaseModel):
    """Sizes and settings of one method-check run (defaults: the full run of docs/method-check.md)."""

    model_config = ConfigDict(extra="forbid")

    out: str = Field("method-check-out", description="Output folder (data sets, models, predictions, results).")
    conditions: list[str] = Field(default_factory=lambda: list(CONDITIONS), description="Conditions to run.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Training seeds per condition.")
    n_domain: int = Field(160, ge=1, description="Domain images with captions (the adaptation input).")
    n_val: int = Field(12, ge=1, description="Domain images of the validation VQA set.")
    n_test: int = Field(32, ge=1, description="Domain images of the held-out test VQA set.")
    epochs: float = Field(2.0, gt=0, description="Domain post-training epochs.")
    learning_rates: list[float] = Field(
        default_factory=lambda: [3e-5, 1e-4, 3e-4, 1e-3], min_length=1,
        description="Domain post-training learning rates; with more than one, each condition uses the one with "
                    "the best validation score of a seed-0 run (the test set is never looked at).")
    batch_size: int = Field(8, ge=1, description="Domain post-training batch size.")
    proxy_warmup_steps: int = Field(10, ge=0, description="Momentum proxy: phase-1 steps (proxy only).")
    eval_max_tokens: int = Field(24, ge=1, description="New tokens per evaluation answer (greedy).")
    synth_max_tokens: int = Field(160, ge=16, description="New tokens per image from the synthesizer.")
    oracle_tasks_per_image: int = Field(2, ge=1, description="Oracle: ground-truth tasks per caption image "
                                                                     "(the synthesizer is tuned to write 2).")
    n_grounding: int = Field(48, ge=0, description="Held-out domain captions on which the synthesizer's grounding "
                                                   "is measured (0: skip this and the generalist's general VQA).")
    keep_models: bool = Field(False, description="Keep the trained domain models on disk.")


def run_config(data_run: str, cfg: MethodCheckConfig, input_json: Path, synthesizer: Path, judge: Path):
    """The pipeline config of one data run: minimed.yaml + the condition's overrides + built model paths."""
    from pipelines.config import load_config
    from pipelines.experiments.miniworld import data

    overrides = [
        f"input.path={input_json}",
        f"synth.model={synthesizer}",
        f"judge.model={judge}",
        f"judge.prompt={data.judge_prompt_path()}",
        f"synth.max_tokens={cfg.synth_max_tokens}",
        *DATA_RUNS[data_run],
    ]
    return load_config("minimed", overrides=overrides)


def build_data(cfg: MethodCheckConfig, out: Path) -> dict[str, dict[str, Any]]:
    """Run the pipeline once per needed data set; return {name: {dir, manifest counts, wall_s}}."""
    from pipelines.experiments.miniworld import data, models
    from pipelines.pipeline import run_dataset

    needed = sorted({TRAIN_DATA[c] for c in cfg.conditions if c != "base"})
    input_json = data.write_domain_captions(out / "domain_captions", cfg.n_domain)
    result = {}
    if "oracle" in needed:
        result["oracle"] = oracle_data(cfg, input_json, out / "data" / "oracle")
    for name in (n for n in needed if n != "oracle"):
        t0 = time.perf_counter()
        dest = out / "data" / name
        manifest = run_dataset(run_config(name, cfg, input_json, models.ensure("synthesizer"),
                                         models.ensure("judge")), dest, overwrite=True, progress=False)
        result[name] = {"dir": str(dest), "wall_s": round(time.perf_counter() - t0, 1),
                        "stages": manifest.data.get("stages", {})}
        log.info("data %s: %s in %.0f s", name, dest, result[name]["wall_s"])
    return result


def oracle_data(cfg: MethodCheckConfig, input_json: Path, dest: Path) -> dict[str, Any]:
    """The oracle data set, composed and mixed with minimed.yaml's compose and mix settings."""
    from pipelines.experiments.method_check.oracle import write_oracle_data

    from pipelines.config import load_config

    t0 = time.perf_counter()
    settings = load_config("minimed", overrides=DATA_RUNS["filtered"])  # the method's compose and mix settings
    write_oracle_data(input_json, dest, settings.mix, settings.compose, cfg.oracle_tasks_per_image)
    return {"dir": str(dest), "wall_s": round(time.perf_counter() - t0, 1),
            "stages": {"oracle": {"in": cfg.n_domain, "tasks_per_image": cfg.oracle_tasks_per_image}}}


def train_condition(condition: str, seed: int, cfg: MethodCheckConfig, data_dir: Path, out: Path,
                    learning_rate: float) -> dict[str, Any]:
    from pipelines.experiments.miniworld import models
    from posttrain.config import MomentumProxySettings, TrainConfig
    from posttrain.train import train

    method = "momentum_proxy" if condition == "momentum" else "sft"
    tc = TrainConfig(method=method, model=str(models.ensure("generalist")), epochs=cfg.epochs,
                     learning_rate=learning_rate, batch_size=cfg.batch_size, max_length=512, use_gpu=False,
                     warmup_ratio=0.05, seed=seed, save_every_steps=100_000, keep_checkpoints=1,
                     momentum_proxy=MomentumProxySettings(warmup_steps=cfg.proxy_warmup_steps))
    metrics = train(tc, data_dir, out)
    return {k: metrics.get(k) for k in ("step", "examples", "final_loss", "elapsed_s")}


def choose_lr(val_scores: dict[float, float]) -> float:
    """The learning rate with the best validation score (ties: the smaller one)."""
    return max(val_scores, key=lambda x: (val_scores[x], -x))


def aggregate_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{condition: {split: {mean, stdev, min, max, n, values}}} over seeds (stdev 0 for one value)."""
    table: dict[str, dict[str, Any]] = {}
    for cond in dict.fromkeys(r["condition"] for r in runs):
        row = {}
        for split in ("val", "test"):
            vals = [r[split]["score"] for r in runs if r["condition"] == cond]
            row[split] = {"mean": statistics.fmean(vals), "stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                          "min": min(vals), "max": max(vals), "n": len(vals), "values": vals}
        table[cond] = row
    return table


def run(cfg: MethodCheckConfig) -> dict[str, Any]:
    """The whole experiment; writes OUT/results.json and returns it."""
    import shutil

    from pipelines.experiments.miniworld import data, models

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    build = {n: models.ensure(n) for n in ("generalist", "synthesizer", "judge")}
    t_models = time.perf_counter() - t0
    judge_check = judge_accuracy(build["judge"])
    log.info("judge on held-out triplets: %s", judge_check)
    synth_check = grounding.measure(build["synthesizer"], n=cfg.n_grounding) if cfg.n_grounding else None
    log.info("synthesizer grounding on held-out domain captions: %s", synth_check)
    learner_check = general_vqa(build["generalist"]) if cfg.n_grounding else None
    log.info("generalist on held-out general questions: %s", learner_check)
    sets = load_sets({split: data.write_domain_vqa(out / f"vqa_{split}", n, split)
                      for split, n in (("val", cfg.n_val), ("test", cfg.n_test))})
    try:
        datasets = build_data(cfg, out)
    finally:
        import ray

        ray.shutdown()  # engine actors and workers end here, not at interpreter exit
    prior = prior_scores(sets)
    runs, lr_search = [], {}

    def trained(cond: str, seed: int, lr: float, splits: list[str], tag: str = "") -> dict[str, Any]:
        rec: dict[str, Any] = {"condition": cond, "seed": seed}
        model_dir = build["generalist"] if cond == "base" else out / "models" / f"{cond}-s{seed}{tag}"
        if cond != "base":
            shutil.rmtree(model_dir, ignore_errors=True)
            rec["learning_rate"] = lr
            rec["train"] = train_condition(cond, seed, cfg, Path(datasets[TRAIN_DATA[cond]]["dir"]), model_dir, lr)
        return evaluated(rec, model_dir, splits, tag)

    def evaluated(rec: dict[str, Any], model_dir: Path, splits: list[str], tag: str) -> dict[str, Any]:
        for split in splits:
            pred_dir = out / "predictions" / f"{rec['condition']}-s{rec['seed']}{tag}" / split
            rec[split] = evaluate(model_dir, sets[split], cfg.eval_max_tokens, pred_dir)
        return rec

    def drop(model_dir: Path) -> None:
        if model_dir != build["generalist"] and not cfg.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)

    for cond in cfg.conditions:
        lr, first = cfg.learning_rates[0], None
        if cond != "base" and len(cfg.learning_rates) > 1:
            # seed 0 at each rate, scored on validation only; the chosen run also serves as seed 0
            sweep = {x: trained(cond, 0, x, ["val"], f"-lr{x:g}") for x in cfg.learning_rates}
            lr = choose_lr({x: r["val"]["score"] for x, r in sweep.items()})
            lr_search[cond] = {"val": {f"{x:g}": r["val"]["score"] for x, r in sweep.items()}, "chosen": lr}
            log.info("%s: validation score by learning rate %s -> %g", cond, lr_search[cond]["val"], lr)
            first = evaluated(sweep[lr], out / "models" / f"{cond}-s0-lr{lr:g}", ["test"], f"-lr{lr:g}")
            for x in cfg.learning_rates:
                drop(out / "models" / f"{cond}-s0-lr{x:g}")
        seeds = [0] if cond == "base" else cfg.seeds  # the base model has nothing seeded to vary
        for seed in seeds:
            if seed == 0 and first is not None:
                rec = first
            else:
                rec = trained(cond, seed, lr, list(sets))
                drop(out / "models" / f"{cond}-s{seed}")
            log.info("%s seed %d: val %.3f test %.3f", cond, seed, rec["val"]["score"], rec["test"]["score"])
            runs.append(rec)
    result = {"config": cfg.model_dump(), "models": {n: models.build_info(n) for n in build},
              "model_build_s": round(t_models, 1), "judge_check": judge_check, "grounding": synth_check,
              "generalist_general_vqa": learner_check, "data": datasets,
              "lr_search": lr_search, "question_prior": prior, "runs": runs, "table": aggregate_runs(runs),
              "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    return result
