"""Method check on the miniature world (issue 9): does synthesis + filtering + single-stage post-training
improve a small generalist on a domain it has only captions for?

Conditions, each evaluated on the held-out domain test set (and the validation set):

    base          the generalist (pre-trained on the general world only)
    captions      SFT on domain captions only                    (mix.strategy=caption_only)
    filtered      SFT on synthetic tasks + captions, single stage, consistency filter on (the method)
    unfiltered    the same without the filter                    (compose.mode=unfiltered)
    two_stage     captions first, then synthetic tasks           (mix.strategy=two_stage)
    momentum      instruction-free momentum-proxy tuning on captions (train.method=momentum_proxy)

The data sets come from the real pipeline (`pipelines.pipeline.run_dataset`: ingest -> vLLM synthesis with
the tuned miniworld synthesizer -> vLLM consistency judge (trained miniworld judge) -> compose -> mix ->
Parquet); training is `posttrain.sft.train`; evaluation is `posttrain.eval.runner.predict` + `score` (greedy, with
the batched transformers engine below) on the
SLAKE-like and PMC-VQA-like sets of `posttrain.eval.tiny_eval`. Training seeds vary; synthesis is greedy,
so the data of a condition is the same for every seed. The summary score of a run is the mean of SLAKE open
recall, SLAKE closed accuracy and PMC-VQA accuracy.

    python pipelines/bench.py method [--out DIR] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

CONDITIONS = ("base", "captions", "filtered", "unfiltered", "two_stage", "momentum")
# condition -> (pipeline overrides of the data run, train method); "base" trains nothing
DATA_RUNS: dict[str, list[str]] = {
    "captions": ["stages=[ingest,mix]", "mix.strategy=caption_only"],
    "filtered": ["mix.strategy=single_stage", "compose.mode=combined"],
    "unfiltered": ["mix.strategy=single_stage", "compose.mode=unfiltered"],
    "two_stage": ["mix.strategy=two_stage", "compose.mode=combined"],
}
TRAIN_DATA = {"captions": "captions", "filtered": "filtered", "unfiltered": "unfiltered", "two_stage": "two_stage",
              "momentum": "captions"}


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
    keep_models: bool = Field(False, description="Keep the trained domain models on disk.")


def summary_score(scores: dict[str, dict[str, Any]]) -> float:
    """Mean of SLAKE open recall, SLAKE closed accuracy and PMC-VQA accuracy (each in [0, 1])."""
    s, p = scores["slake"]["metrics"], scores["pmc_vqa"]["metrics"]
    return (s.get("open_recall", 0.0) + s.get("closed_accuracy", 0.0) + p.get("accuracy", 0.0)) / 3


def run_config(data_run: str, cfg: MethodCheckConfig, input_json: Path, synthesizer: Path, judge: Path):
    """The pipeline config of one data run: minimed.yaml + the condition's overrides + built model paths."""
    from pipelines.config import load_config
    from pipelines.miniworld import data

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
    from pipelines.miniworld import data, models
    from pipelines.pipeline import run_dataset

    needed = sorted({TRAIN_DATA[c] for c in cfg.conditions if c != "base"})
    input_json = data.write_domain_captions(out / "domain_captions", cfg.n_domain)
    result = {}
    for name in needed:
        t0 = time.perf_counter()
        dest = out / "data" / name
        manifest = run_dataset(run_config(name, cfg, input_json, models.ensure("synthesizer"),
                                         models.ensure("judge")), dest, overwrite=True, progress=False)
        result[name] = {"dir": str(dest), "wall_s": round(time.perf_counter() - t0, 1),
                        "stages": manifest.data.get("stages", {})}
        log.info("data %s: %s in %.0f s", name, dest, result[name]["wall_s"])
    return result


def train_condition(condition: str, seed: int, cfg: MethodCheckConfig, data_dir: Path, out: Path,
                    learning_rate: float) -> dict[str, Any]:
    from pipelines.miniworld import models
    from posttrain.config import MomentumProxySettings, TrainConfig
    from posttrain.sft import train

    method = "momentum_proxy" if condition == "momentum" else "sft"
    tc = TrainConfig(method=method, model=str(models.ensure("generalist")), epochs=cfg.epochs,
                     learning_rate=learning_rate, batch_size=cfg.batch_size, max_length=512, use_gpu=False,
                     warmup_ratio=0.05, seed=seed, save_every_steps=100_000, keep_checkpoints=1,
                     momentum_proxy=MomentumProxySettings(warmup_steps=cfg.proxy_warmup_steps))
    metrics = train(tc, data_dir, out)
    return {k: metrics.get(k) for k in ("step", "examples", "final_loss", "elapsed_s")}


class BatchedVLMEngine:
    """Greedy generation with transformers, a whole batch per call (the `synth.engines.Engine` protocol).

    `synth.engines.TransformersEngine` generates one request at a time, which on 2 shared cores makes
    evaluating 16 models take longer than the whole budget; a vLLM engine per model costs ~25 s of start
    each. Left padding keeps every prompt's last token at the end; answers stop at EOS.
    """

    def __init__(self, model_path: str | Path, max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._torch = torch
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32).eval()
        self.max_tokens = max_tokens

    def _encode(self, requests: list) -> dict[str, Any]:
        return self.processor(text=[r.prompt for r in requests], images=[list(r.images) for r in requests],
                              padding=True, return_tensors="pt")

    def count_prompt_tokens(self, request: Any) -> int:
        return int(self._encode([request])["input_ids"].shape[1])

    def generate(self, requests: list) -> list:
        from synth.engines import GenResult

        if not requests:
            return []
        enc = self._encode(requests)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        with self._torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_tokens, do_sample=False, eos_token_id=eos,
                                      pad_token_id=pad)
        width = enc["input_ids"].shape[1]
        lengths = enc["attention_mask"].sum(1).tolist()
        results = []
        for row, n_prompt in zip(out[:, width:].tolist(), lengths, strict=True):
            hit = eos in row
            new = row[: row.index(eos)] if hit else row
            results.append(GenResult(text=self.tokenizer.decode(new, skip_special_tokens=True),
                                     n_prompt_tokens=int(n_prompt), n_output_tokens=len(new) + hit,
                                     finish_reason="stop" if hit else "length"))
        return results

    def close(self) -> None:
        self.model = None


def load_sets(sets: dict[str, dict[str, Path]]) -> dict[str, dict[str, list]]:
    """{split: {task: examples}}, read once for every model that is evaluated on them."""
    from posttrain.eval.tasks import get_task

    return {split: {task: get_task(task).load(path).examples for task, path in paths.items()}
            for split, paths in sets.items()}


def evaluate(model_dir: Path, examples: dict[str, list], cfg: MethodCheckConfig, pred_dir: Path) -> dict[str, Any]:
    """Greedy answers through the eval runner and their scores per task, plus the summary score."""
    from posttrain.eval.runner import chat_renderer, predict, score, write_jsonl
    from posttrain.eval.tasks import get_task

    engine = BatchedVLMEngine(model_dir, cfg.eval_max_tokens)
    try:
        chat = chat_renderer(engine.processor)
        out = {}
        for task, exs in examples.items():
            preds = predict(get_task(task), exs, engine, chat, batch_size=64)
            write_jsonl(pred_dir / f"{task}.jsonl", preds)
            out[task] = score(task, preds, [e.ref() for e in exs])
    finally:
        engine.close()
    out["score"] = summary_score(out)
    return out


def prior_scores(sets: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Test scores of the question prior learned on the validation split (`load_sets` examples)."""
    from posttrain.eval.baselines import question_prior
    from posttrain.eval.runner import score

    out = {}
    for task, exs in sets["test"].items():
        known = [e.ref() for e in sets["val"][task]]
        refs = [e.ref() for e in exs]
        out[task] = score(task, question_prior(known, refs), refs)
    out["score"] = summary_score(out)
    return out


def judge_accuracy(judge: Path, n_images: int = 6, seed: int = 99) -> dict[str, Any]:
    """The trained judge on held-out general triplets (labelled by construction), through the judge's own
    prompt rendering and structured choice: accuracy overall and per true label."""
    import random

    from filters.judge import CHOICES, label_of, render
    from pipelines.miniworld import data, worlds
    from synth.config import EngineResources
    from synth.engines import GenRequest, SamplingSettings, make_engine

    rng = random.Random(seed)
    items = [worlds.make_general(i, seed=seed)[0] for i in range(n_images + 1)]
    triplets = [t for i in range(n_images) for t in worlds.judge_triplets(items[i], items[i + 1], rng)]
    template = data.judge_template()
    engine = make_engine(str(judge), EngineResources(engine="transformers", device="cpu"),
                         sampling=SamplingSettings(max_tokens=4), multimodal=False, max_model_len=1024)
    try:
        results = engine.generate([GenRequest(render(template, t["instruction"], t["informative"], t["precise"]),
                                              choices=list(CHOICES)) for t in triplets])
    finally:
        engine.close()
    per: dict[str, list[bool]] = {}
    for t, r in zip(triplets, results, strict=True):
        per.setdefault(t["label"], []).append(label_of(r) == t["label"])
    hits = [h for v in per.values() for h in v]
    return {"n": len(hits), "accuracy": sum(hits) / len(hits),
            "by_label": {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(per.items())}}


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

    from pipelines.miniworld import data, models

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    build = {n: models.ensure(n) for n in ("generalist", "synthesizer", "judge")}
    t_models = time.perf_counter() - t0
    judge_check = judge_accuracy(build["judge"])
    log.info("judge on held-out general triplets: %s", judge_check)
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
            rec[split] = evaluate(model_dir, sets[split], cfg, pred_dir)
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
              "model_build_s": round(t_models, 1), "judge_check": judge_check, "data": datasets,
              "lr_search": lr_search, "question_prior": prior, "runs": runs, "table": aggregate_runs(runs),
              "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def format_data(result: dict[str, Any]) -> str:
    """One line per data run: images, synthesized tasks parsed, tasks the judge kept, wall time."""
    lines = []
    for name, d in result["data"].items():
        st = d["stages"]
        synth, judge = st.get("synth", {}), st.get("judge", {})
        lines.append(f"{name}: {st.get('ingest', {}).get('out', 0)} images; synth rows in/out/rejected "
                     f"{synth.get('in', 0)}/{synth.get('out', 0)}/{synth.get('rejected', 0)}; judge tasks "
                     f"in/kept/rejected {judge.get('in', 0)}/{judge.get('out', 0)}/{judge.get('rejected', 0)}; "
                     f"{d['wall_s']:.0f} s")
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of mean +- stdev (min..max) per condition, validation and test."""
    lines = ["| condition | seeds | val score | test score | test slake open | test slake closed | test pmc acc |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for cond, row in result["table"].items():
        runs = [r for r in result["runs"] if r["condition"] == cond]

        def m(get) -> str:
            return f"{statistics.fmean(get(r) for r in runs):.3f}"

        cells = [f"{row[s]['mean']:.3f} ± {row[s]['stdev']:.3f} ({row[s]['min']:.3f}..{row[s]['max']:.3f})"
                 for s in ("val", "test")]
        lines.append(f"| {cond} | {row['test']['n']} | {cells[0]} | {cells[1]} | "
                     f"{m(lambda r: r['test']['slake']['metrics'].get('open_recall', 0))} | "
                     f"{m(lambda r: r['test']['slake']['metrics'].get('closed_accuracy', 0))} | "
                     f"{m(lambda r: r['test']['pmc_vqa']['metrics'].get('accuracy', 0))} |")
    if "question_prior" in result:  # the reference: answers from the question alone, never the image
        q = result["question_prior"]
        lines.append(f"| question prior (no image) | - | - | {q['score']:.3f} | "
                     f"{q['slake']['metrics'].get('open_recall', 0):.3f} | "
                     f"{q['slake']['metrics'].get('closed_accuracy', 0):.3f} | {q['pmc_vqa']['metrics']['accuracy']:.3f} |")
    return "\n".join(lines)


# The fast version (CI): the full run's data and test set, base and filtered only, seed 0, at the full run's
# validation choice of learning rate for filtered (docs/method-check.md); model training is cheap here, the
# vLLM data run is what costs time.
QUICK = dict(conditions=["base", "filtered"], seeds=[0], learning_rates=[1e-4])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pipelines/bench.py method", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="method-check-out", help="output folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    ap.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=None, help="conditions to run")
    ap.add_argument("--learning-rates", type=float, nargs="+", default=None,
                    help="domain learning rates to choose from on the validation split (default 3e-5 1e-4 3e-4 1e-3)")
    ap.add_argument("--quick", action="store_true", help="the small version the test runs")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fields: dict[str, Any] = {"out": a.out, **(QUICK if a.quick else {})}
    if a.seeds:
        fields["seeds"] = a.seeds
    if a.conditions:
        fields["conditions"] = a.conditions
    if a.learning_rates:
        fields["learning_rates"] = a.learning_rates
    result = run(MethodCheckConfig(**fields))
    print(format_table(result))  # CLI output
    print(format_data(result))
    print(f"judge on held-out general triplets: {result['judge_check']}")
    print(f"wall time {result['wall_s']:.0f} s (model building {result['model_build_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
