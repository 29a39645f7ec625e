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

from filters.compose import ComposeStage
from filters.judge import ConsistencyJudge
from filters.mix import MixStage
from filters.stats import FilterStats
from pipelines.config import RunConfig
from pipelines.core.stage import Stage
from pipelines.ingest import IngestStage
from pipelines.manifest import Manifest
from pipelines.sources import image_root
from synth.stage import SynthStage

log = logging.getLogger(__name__)

# Stage names of --stages that build the dataset, in pipeline order. Ingest always runs: it is the safety
# gate that decodes and checks every image.
DATASET_STAGES = ("ingest", "synth", "judge", "mix")
BLOCK_BYTES = 4 << 20  # Ray Data block size cap: what one block holds in the driver and workers; ~4k path rows


@dataclass(frozen=True)
class StageCall:
    """One `map_batches` step: the stage class, its constructor arguments (its own config section plus what
    it shares with others, passed explicitly) and its Ray options."""

    cls: type[Stage]
    kwargs: dict[str, Any]
    options: dict[str, Any]


def stage_calls(cfg: RunConfig) -> list[StageCall]:
    """The dataset stages CFG runs, in order. Model references in CFG must already be resolved to paths."""
    wanted = {"ingest", *cfg.stages}
    root = image_root(cfg.input) if cfg.input.path else ""
    calls = [StageCall(IngestStage, {"cfg": cfg.input, "default_root": root}, IngestStage.ray_options(cfg.num_cpus))]
    if "synth" in wanted:
        calls.append(StageCall(SynthStage, {"cfg": cfg.synth, "max_image_pixels": cfg.input.max_image_pixels},
                               SynthStage.ray_options(cfg.synth)))
    if "judge" in wanted:
        calls.append(StageCall(ConsistencyJudge,
                               {"cfg": cfg.judge, "filter_tasks": cfg.compose.mode != "unfiltered", "seed": cfg.seed},
                               ConsistencyJudge.ray_options(cfg.judge)))
    if "mix" in wanted:
        calls.append(StageCall(ComposeStage, {"cfg": cfg.compose}, ComposeStage.ray_options(cfg.judge.batch_size)))
        calls.append(StageCall(MixStage, {"cfg": cfg.mix}, MixStage.ray_options(cfg.judge.batch_size)))
    return calls


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
    stages = [c.cls.__name__ for c in stage_calls(cfg)]
    return Plan(str(cfg.input.path), input_format, str(out), stages, done, models)


def init_ray(cfg: RunConfig) -> None:
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "log_to_driver": True}
        # Third-party noise is cut at its source, in every actor: vLLM logs per-request INFO and, on CPU, a
        # dozen WARNINGs about Triton, eager mode and the V1 runner per engine; transformers warns per
        # process about torchvision and (5.19, `Idefics3Config()` built for a repr) a default pad_token_id
        # outside the default vocabulary; torch emits FutureWarnings about vLLM's own calls and C++ notes
        # on NUMA binding. Errors still show; a user's own setting of any of these wins.
        env = {
            "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"),
            "TRANSFORMERS_VERBOSITY": os.environ.get("TRANSFORMERS_VERBOSITY", "error"),
            "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::FutureWarning"),
            "TORCH_CPP_LOG_LEVEL": os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR"),
            "TOKENIZERS_PARALLELISM": "false",
            # vLLM's engine core runs inside the actor, not as its child process. Ray SIGKILLs an exiting
            # actor's children (the engine core and multiprocessing's resource tracker) before Ray Data's
            # `__ray_shutdown__` lets the stage close its engine, so a child engine always died mid-way:
            # resource_tracker KeyError tracebacks, a shared-memory segment left in /dev/shm per engine.
            # In-process there is no child, no shared memory and no second interpreter to start; the cost
            # is that input/output processing no longer overlaps the model step (not seen on CPU, not
            # measured on GPU; see docs/architecture.md).
            "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
        }
        kwargs["runtime_env"] = {"env_vars": env}
        if not os.environ.get("RAY_ADDRESS"):
            kwargs["num_cpus"] = cfg.num_cpus
        ray.init(**kwargs)
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # deterministic dedup winner and part contents
    # Ray merges a task's outputs into blocks of up to 128 MiB by default: a whole JSON file's rows then
    # reach the driver as one block after the read ends (no streaming, driver memory grows with the input).
    ctx.target_max_block_size = BLOCK_BYTES
    ctx.enable_progress_bars = False  # the driver draws its own (Progress below)
    # An engine actor holds its model and (on CPU) its KV cache, a fixed share of RAM set by
    # gpu_memory_utilization, from its first batch on; Ray Data's high-memory detector reports that every
    # 30 s as a risk and proposes a `memory=` request that would only constrain scheduling. Ingest, the
    # other heavy stage, is bounded by input.max_image_pixels and BLOCK_BYTES.
    ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    # Ray Data's INFO lines (execution plan, log folder) and its warning that the bars above are off.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


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
    for call in stage_calls(cfg):
        ds = ds.map_batches(call.cls, fn_constructor_kwargs=call.kwargs, batch_format="numpy", **call.options)
    return ds


class Progress:
    """Per-stage progress of the rows the sink receives, on stderr.

    On a terminal: one tqdm bar (rows/s, generated tokens/s, and each stage's out/in so far). Otherwise
    (a log file, CI): the same as one line every `every_s` seconds and once at the end.
    """

    def __init__(self, enabled: bool, *, tty: bool | None = None, every_s: float = 30.0):
        from tqdm import tqdm

        self.enabled = enabled
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = tqdm(unit="row", disable=not (enabled and self.tty), file=sys.stderr, dynamic_ncols=True,
                        mininterval=1.0)
        self.t0 = self.last = time.monotonic()
        self.every_s = every_s
        self.rows = self.tokens = 0
        self.stages: dict[str, list[int]] = {}  # stage -> [in, out, rejected] over the rows seen

    def __call__(self, row: dict[str, Any]) -> None:
        import json

        self.rows += 1
        self.tokens += int(row.get("n_output_tokens") or 0)
        for stage, c in json.loads(row.get("counts") or "{}").items():
            t = self.stages.setdefault(stage, [0, 0, 0])
            t[0], t[1], t[2] = t[0] + c["in"], t[1] + c["out"], t[2] + c["rejected"]
        self.bar.update(1)
        now = time.monotonic()
        if self.tty and self.rows % 8 == 0:
            self.bar.set_postfix_str(f"{self.tokens / max(now - self.t0, 1e-9):.0f} tok/s  " + self._stages(),
                                     refresh=False)
        elif self.enabled and not self.tty and now - self.last >= self.every_s:
            self.last = now
            print(f"progress: {self._rate(now)}  {self._stages()}", file=sys.stderr, flush=True)

    def _rate(self, now: float) -> str:
        dt = max(now - self.t0, 1e-9)
        return f"{self.rows} rows in {dt:.0f} s ({self.rows / dt:.2f} rows/s, {self.tokens / dt:.0f} tok/s)"

    def _stages(self) -> str:
        """Each stage's out/in so far, in pipeline order (counts arrive keyed alphabetically)."""
        order = ["ingest", "synth", "judge", "compose", "mix"]
        names = [s for s in order if s in self.stages] + sorted(set(self.stages) - {*order, "read"})
        return "  ".join(f"{s} {self.stages[s][1]}/{self.stages[s][0]}" for s in names)

    def close(self) -> None:
        self.bar.close()
        if self.enabled and not self.tty and self.rows:  # the summary then has a line per stage
            print(f"progress: {self._rate(time.monotonic())}  {self._stages()}", file=sys.stderr, flush=True)


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
                       done_index=index, stats=FilterStats)
    ds = build_dataset(cfg, done_index=str(index.sources_path) if index.n_sources else "")
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            sink.add_batch(batch)
    except BaseException:
        sink.abort()  # the uncommitted parts' temp files; committed parts stay for the resume
        raise
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
