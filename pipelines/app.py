"""What a run does after its config and input passed the checks: dataset, card, training, eval, publish."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path

from pipelines.config import RunConfig

log = logging.getLogger(__name__)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def run_all(cfg: RunConfig, out: Path, args: argparse.Namespace) -> int:
    from pipelines.card import write_card
    from pipelines.pipeline import DATASET_STAGES, run_dataset
    from pipelines.report import write_report

    try:
        if any(s in DATASET_STAGES for s in cfg.stages):
            manifest = run_dataset(
                cfg, out, resume=not args.no_resume, overwrite=args.overwrite, progress=not args.no_progress
            )
            write_card(out, manifest.data)
            write_report(out)
            _stop_ray()  # the engine actors end now, not while training runs (one Ray per job; Ray Train starts its own)
        if "train" in cfg.stages:
            from posttrain.train import train

            train(cfg.train, out / "data", out / "model")
            write_report(out)  # adds the loss curve from OUT/model/metrics.jsonl
        if "eval" in cfg.stages:
            from posttrain.eval.suite import run_eval

            models = {"base": cfg.train.model}
            if (out / "model" / "config.json").exists():
                models["adapted"] = str(out / "model")
            run_eval(cfg.eval, models, out / "eval")
            write_report(out)  # adds the eval table
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            return _fail(f"cannot write to {getattr(e, 'filename', None) or out}: {e.strerror}; "
                         "parts already committed in the manifest are intact")
        raise
    _stop_ray()  # flushes worker logs now, so the summary below is the last thing printed
    repo = args.push_to_hub or cfg.hub.repo_id
    if repo:
        from pipelines.hub import HubError, push_dataset

        try:
            url = push_dataset(out, repo, private=cfg.hub.private, endpoint=cfg.hub.endpoint,
                               timeout_s=cfg.hub.timeout_s)
        except HubError as e:
            return _fail(f"{e} (the local dataset in {out} is intact)")
        print(f"published: {url}")
    print(summary(out))
    return 0


def _stop_ray(wait_s: float = 60.0) -> None:
    """Shut Ray down once the pipeline actors have exited on their own.

    When a dataset is done, Ray Data drops its actor handles and each actor exits gracefully (the stage's
    `__del__` closes its engine, at the latest as the actor's interpreter exits). A `ray.shutdown()`
    before that kills them mid-exit, and whatever they print on the way out is cut off. So wait (bounded).
    Ray kills an exiting actor's child processes before `__ray_shutdown__` runs, which is why `init_ray`
    keeps vLLM's engine core inside the actor.
    """
    if "ray" not in sys.modules:
        return
    import time

    import ray

    if not ray.is_initialized():
        return
    try:
        from ray._private import state

        job = ray.get_runtime_context().get_job_id()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            alive = [a for a in state.actors().values() if a.get("JobID") == job and a.get("State") != "DEAD"
                     and "MapWorker" in a.get("ActorClassName", "")]
            if not alive:
                break
            time.sleep(0.2)
        else:
            log.warning("%d pipeline actor(s) still running after %.0f s; stopping them", len(alive), wait_s)
    except (ImportError, AttributeError) as e:  # a Ray without this state API: just stop
        log.debug("cannot list actors (%s); shutting Ray down now", e)
    ray.shutdown()


def summary(out: Path) -> str:
    import json

    m = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {"stages": {}}
    lines = [f"done: {out}"]
    from pipelines.manifest import STAGE_ORDER

    order = list(STAGE_ORDER)
    for stage, c in sorted(m["stages"].items(), key=lambda kv: (order + [kv[0]]).index(kv[0])):
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(c.get("rejected_by_reason", {}).items()))
        lines.append(f"  {stage:<8} in {c['in']:>6}  out {c['out']:>6}  rejected {c['rejected']:>6}"
                     + (f"  ({reasons})" if reasons else ""))
    lines += [
        f"  dataset  {out / 'data'}",
        f"  rejects  {out / 'rejects'}",
        f"  manifest {out / 'manifest.json'}",
        f"  card     {out / 'README.md'}",
    ]
    if (out / "model" / "config.json").exists():
        lines.append(f"  model    {out / 'model'}")
    if (out / "eval" / "report.md").exists():
        lines.append(f"  eval     {out / 'eval' / 'report.md'}")
    if (out / "report.html").exists():
        lines.append(f"  report   {out / 'report.html'}")
    return "\n".join(lines)
