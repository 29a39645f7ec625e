"""Per-stage timing figures of a run, from what the sink saw, kept in the manifest's `runs` entries.

Every stage stamps each row with the wall-clock span of the batch that processed it (`spans`) and its
share of the stage's processing time (`busy`); the sink keeps, per stage, the earliest start, the latest
end and the summed busy seconds. From those and the run's start time:

- `startup_s`: run start (before Ray starts) to the first batch any stage began, i.e. Ray start-up and
  planning; a stage's `start_s` additionally includes its actors' construction (engine load).
- `first_row_s`: run start to the first row reaching the sink (time to first output).
- per stage `wall_s` (first batch start to last batch end) and `busy_s` (time inside `process`, summed
  over replicas, so busy/wall above 1 means replicas worked in parallel; far below 1 means it waited).
- tokens/s in (prompt) and out (generated) over the run's wall time.
"""

from __future__ import annotations

from typing import Any


def run_entry(sink, t0: float, wall_s: float, resumed_from: int) -> dict[str, Any]:
    """The manifest `runs` entry of one run (`sink`: the run's DatasetSink; t0: run start, epoch seconds)."""
    stages = {
        name: {"start_s": round(lo - t0, 3), "wall_s": round(hi - lo, 3), "busy_s": round(sink.run_busy.get(name, 0.0), 3)}
        for name, (lo, hi) in sorted(sink.spans.items(), key=lambda kv: kv[1][0])
    }
    starts = [lo for lo, _ in sink.spans.values()]
    return {
        "started": t0,
        "wall_s": round(wall_s, 3),
        "rows": sink.totals["rows"],
        "resumed_from": resumed_from,
        "startup_s": round(min(starts) - t0, 3) if starts else None,
        "first_row_s": round(sink.first_row_at - t0, 3) if sink.first_row_at else None,
        "stages": stages,
        "tokens": {"prompt": sink.totals["tokens_prompt"], "output": sink.totals["tokens_output"]},
    }


def run_figures(run: dict[str, Any]) -> dict[str, Any]:
    """Derived figures of a `runs` entry: rows/s, tokens/s in and out, per-stage busy fraction."""
    wall = run.get("wall_s") or 0.0
    tok = run.get("tokens") or {}
    per = lambda n: round(n / wall, 2) if wall > 0 else None
    stages = [
        {"stage": name, **s, "busy_frac": round(s["busy_s"] / s["wall_s"], 3) if s.get("wall_s") else None}
        for name, s in sorted((run.get("stages") or {}).items(), key=lambda kv: kv[1].get("start_s") or 0.0)
    ]
    return {
        "wall_s": wall, "rows": run.get("rows", 0), "resumed_from": run.get("resumed_from", 0),
        "startup_s": run.get("startup_s"), "first_row_s": run.get("first_row_s"),
        "rows_per_s": per(run.get("rows", 0)), "tokens_in_per_s": per(tok.get("prompt", 0)),
        "tokens_out_per_s": per(tok.get("output", 0)), "stages": stages,
    }


def format_table(fig: dict[str, Any]) -> str:
    """A plain-text table of `run_figures` output (what the benchmark prints)."""
    head = (f"run: {fig['rows']} rows in {fig['wall_s']} s (resumed from {fig['resumed_from']} ids), "
            f"start-up {fig['startup_s']} s, first row {fig['first_row_s']} s, "
            f"tokens/s in {fig['tokens_in_per_s']} out {fig['tokens_out_per_s']}")
    lines = [head, f"{'stage':<10}{'start s':>10}{'wall s':>10}{'busy s':>10}{'busy/wall':>11}"]
    for s in fig["stages"]:
        lines.append(f"{s['stage']:<10}{s['start_s']:>10.2f}{s['wall_s']:>10.2f}{s['busy_s']:>10.2f}"
                     f"{(s['busy_frac'] if s['busy_frac'] is not None else float('nan')):>11.2f}")
    return "\n".join(lines)
