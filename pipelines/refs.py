"""Model and data references -> local paths, resolved once at the edge (CLI, benches, eval CLI).

`tiny://<name>` builds an untrained offline model (`pipelines.fixtures.tiny`, or a tiny random build of one of
the paper's model families, `pipelines.fixtures.families`), `miniworld://<name>` a trained
model of the method check (`pipelines.experiments.miniworld.models`); both are cached under
`$VLM_ADAPT_CACHE`. Anything else (a hub id, a local path) passes through unchanged. No stage or recipe
knows these schemes: they receive the plain path this module returns.
"""

from __future__ import annotations


from pipelines.config import RunConfig

TINY = "tiny://"
MINIWORLD = "miniworld://"


def resolve_model(ref: str) -> str:
    """A model reference -> a path or hub id that `from_pretrained` / `vllm.LLM` load."""
    if ref.startswith(TINY):
        from pipelines.fixtures import families
        from pipelines.fixtures.tiny import build_tiny

        name = ref[len(TINY):]
        # the paper's families (tiny://qwen2-vl, llava-next, mllama, ...) or the machinery models (vlm, judge, tsm)
        return str(families.build_family(name) if name in families.FAMILIES else build_tiny(name))
    if ref.startswith(MINIWORLD):
        from pipelines.experiments.miniworld.models import ensure

        return str(ensure(ref[len(MINIWORLD):]))
    return ref


def resolve_tsm(ref: str | None) -> str | None:
    """A task-specific model reference: `module:attr` import paths pass through, models resolve."""
    return None if ref is None else resolve_model(ref)


def resolve_eval_data(ref: str | None, *, n: int, tasks: list[str]) -> str | None:
    """`tiny://<domain>` builds the tiny eval set (SLAKE-like, PMC-VQA-like) from the sample domain, once, under
    the cache (never inside an output folder, which `--overwrite` clears); a folder or None passes through."""
    if not ref or not ref.startswith(TINY):
        return ref
    from pipelines.core.cache import build_once, cache_root
    from pipelines.fixtures.tiny_eval import build_tiny_eval

    domain = ref[len(TINY):]
    dest = build_once(cache_root() / "eval" / f"tiny-{domain}-n{n}",
                      lambda tmp: {"tasks": sorted(build_tiny_eval(tmp, n=n, seed=0, domain=domain))}, "tiny_eval.json")
    missing = [t for t in tasks if not (dest / t).exists()]
    if missing:
        raise ValueError(f"the tiny eval set has tasks {sorted(p.name for p in dest.iterdir() if p.is_dir())}, "
                         f"not {missing}")
    return str(dest)


def resolve_run(cfg: RunConfig) -> RunConfig:
    """A copy of CFG whose model and eval-data references are local paths (built on first use), for the
    stages it runs; the copy keeps the original references for its hash, so resume does not depend on where
    the cache lives."""
    fields: dict[str, str] = {}
    if "synth" in cfg.stages:
        fields["synth.model"] = resolve_model(cfg.synth.model)
    if "judge" in cfg.stages:
        fields["judge.model"] = resolve_model(cfg.judge.model)
    if "train" in cfg.stages or "eval" in cfg.stages:
        fields["train.model"] = resolve_model(cfg.train.model)
    if "train" in cfg.stages and cfg.train.vitask.tsm:
        fields["train.vitask.tsm"] = resolve_tsm(cfg.train.vitask.tsm)
    if "eval" in cfg.stages and cfg.eval.data_dir:
        fields["eval.data_dir"] = resolve_eval_data(cfg.eval.data_dir, n=cfg.eval.limit or 8, tasks=cfg.eval.tasks)
    return cfg.with_resolved(fields)
