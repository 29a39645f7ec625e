"""Build and run the streaming dataset pipeline: source -> stages -> sink."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.manifest import Manifest

log = logging.getLogger(__name__)

# Stage name in --stages -> stage classes ("module:Class"), in pipeline order.
# Ingest always runs: it is the safety gate that decodes and checks every image.
STAGE_CLASSES: dict[str, list[str]] = {
    "ingest": ["pipelines.ingest:IngestStage"],
    "synth": ["synth.stage:SynthStage"],
    "judge": ["filters.judge:ConsistencyJudge"],
    "mix": ["filters.compose:ComposeStage", "filters.mix:MixStage"],
}
DATASET_STAGES = tuple(STAGE_CLASSES)
BLOCK_BYTES = 4 << 20  # Ray Data block size cap: what one block holds in the driver and workers; ~4k path rows


def _load(ref: str) -> type:
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def planned_stage_classes(cfg: RunConfig) -> list[str]:
    wanted = {"ingest", *cfg.stages}
    return [ref for name in DATASET_STAGES if name in wanted for ref in STAGE_CLASSES[name]]


@dataclass
class Plan:
    """What a run will do; printed by --dry-run."""

    input_path: str
    input_format: str
    out: str
    stages: list[str]
    resume_from: int
    models: dict[str, str]

    def describe(self) -> str:
        lines = [
            f"input   {self.input_path} ({self.input_format})",
            f"out     {self.out}" + (f" (resuming: {self.resume_from} ids already written)" if self.resume_from else ""),
            "stages  " + " -> ".join(self.stages + ["sink"]),
        ]
        lines += [f"model   {k}: {v}" for k, v in self.models.items()]
        return "\n".join(lines)


def make_plan(cfg: RunConfig, out: Path, input_format: str, done: int) -> Plan:
    models = {}
    if "synth" in cfg.stages:
        models["synth"] = f"{cfg.synth.model} ({cfg.synth.engine}, replicas={cfg.synth.replicas}, tp={cfg.synth.tensor_parallel_size})"
    if "judge" in cfg.stages:
        models["judge"] = f"{cfg.judge.model} ({cfg.judge.engine}, replicas={cfg.judge.replicas})"
    if "train" in cfg.stages:
        models["train"] = f"{cfg.train.model} ({cfg.train.method})"
    stages = [r.split(":")[1] for r in planned_stage_classes(cfg)]
    return Plan(str(cfg.input.path), input_format, str(out), stages, done, models)


def init_ray(cfg: RunConfig) -> None:
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "log_to_driver": True}
        # vLLM's per-request INFO lines from every engine actor drown the run's own output.
        level = os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")
        kwargs["runtime_env"] = {"env_vars": {"VLLM_LOGGING_LEVEL": level, "TOKENIZERS_PARALLELISM": "false"}}
        if not os.environ.get("RAY_ADDRESS"):
            kwargs["num_cpus"] = cfg.num_cpus
        ray.init(**kwargs)
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # deterministic dedup winner and part contents
    # Ray merges a task's outputs into blocks of up to 128 MiB by default: a whole JSON file's rows then
    # reach the driver as one block after the read ends (no streaming, driver memory grows with the input).
    ctx.target_max_block_size = BLOCK_BYTES
    ctx.enable_progress_bars = False


def open_output(cfg: RunConfig, out: Path, *, resume: bool, overwrite: bool) -> Manifest:
    if overwrite and out.exists():
        for sub in ("data", "rejects", "model", "eval"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for f in ("manifest.json", "README.md", "report.html"):
            (out / f).unlink(missing_ok=True)
    return Manifest.open(out, cfg.hash(), cfg.model_dump(mode="json"), resume=resume)


def build_dataset(cfg: RunConfig, done_ids: frozenset[str] = frozenset(), done_index: str = ""):
    from pipelines.sources import read_source

    ds = read_source(cfg.input, done_ids=done_ids, done_index=done_index)
    for ref in planned_stage_classes(cfg):
        cls = _load(ref)
        ds = ds.map_batches(cls, fn_constructor_kwargs={"cfg": cfg}, batch_format="numpy", **cls.ray_options(cfg))
    return ds


class Progress:
    """Rows/s and generated tokens/s on stderr (tqdm when attached to a terminal or forced)."""

    def __init__(self, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(unit="row", disable=not enabled, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        self.t0 = time.monotonic()
        self.tokens = 0

    def __call__(self, row: dict[str, Any]) -> None:
        self.tokens += int(row.get("n_output_tokens") or 0)
        self.bar.update(1)
        dt = max(time.monotonic() - self.t0, 1e-9)
        if self.bar.n % 16 == 0:
            self.bar.set_postfix(tok_s=f"{self.tokens / dt:.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_dataset(cfg: RunConfig, out: Path, *, resume: bool = True, overwrite: bool = False, progress: bool = True) -> Manifest:
    """Run ingest..mix into OUT (resuming by default) and return the committed manifest."""
    from pipelines.resume_index import DoneIndex
    from pipelines.sinks import DatasetSink

    out.mkdir(parents=True, exist_ok=True)
    manifest = open_output(cfg, out, resume=resume, overwrite=overwrite)
    t0 = time.time()  # start-up figures include indexing committed parts and starting Ray
    index = DoneIndex.build(manifest)  # committed ids on disk: never a driver-side set
    done = index.n_ids
    init_ray(cfg)
    bar = Progress(progress)
    sink = DatasetSink(out, manifest, domain=cfg.domain, rows_per_shard=cfg.rows_per_shard, on_row=bar,
                       done_index=index)
    ds = build_dataset(cfg, done_index=str(index.sources_path) if index.n_sources else "")
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        sink.add_batch(batch)
    sink.close()
    bar.close()
    if cfg.mix.general_input and cfg.mix.general_fraction > 0 and not done:
        from filters.mix import load_general_records

        n_domain = sum(v for k, v in sink.totals.items() if k.startswith("records_"))
        sink.add_extra_records(
            load_general_records(cfg.mix.general_input, cfg.mix.general_fraction, n_domain, cfg.mix.seed), "general"
        )
    from pipelines.timing import run_entry

    manifest.data["runs"].append(run_entry(sink, t0, time.time() - t0, done))
    manifest.commit()
    index.close()
    unbalanced = manifest.check_balanced()
    if unbalanced:
        raise AssertionError(f"stage counts do not balance for {unbalanced}: a row was lost")
    return manifest
