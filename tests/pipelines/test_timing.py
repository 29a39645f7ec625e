"""Per-stage run figures (issue 16, deliver 2): what the manifest's `runs` entry and the report show.

Expected values are worked out by hand from the stamps below (definitions in pipelines/timing.py).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from pipelines.core.rows import add_span, empty_row
from pipelines.timing import format_table, run_entry, run_figures


def test_run_entry_and_figures_from_stage_spans():
    sink = SimpleNamespace(
        spans={"synth": [110.0, 140.0], "read": [102.0, 104.0], "ingest": [103.0, 125.0]},
        run_busy=Counter({"read": 1.0, "ingest": 11.0, "synth": 45.0}),
        totals=Counter({"rows": 50, "tokens_prompt": 5000, "tokens_output": 2500}),
        first_row_at=112.5,
    )
    run = run_entry(sink, t0=100.0, wall_s=50.0, resumed_from=7)
    assert run["startup_s"] == 2.0 and run["first_row_s"] == 12.5 and run["resumed_from"] == 7
    assert run["stages"]["synth"] == {"start_s": 10.0, "wall_s": 30.0, "busy_s": 45.0}
    fig = run_figures(run)
    assert [s["stage"] for s in fig["stages"]] == ["read", "ingest", "synth"]  # by first batch
    assert fig["stages"][2]["busy_frac"] == 1.5  # two replicas busy in parallel: busy > wall
    assert fig["stages"][1]["busy_frac"] == 0.5
    assert (fig["rows_per_s"], fig["tokens_in_per_s"], fig["tokens_out_per_s"]) == (1.0, 100.0, 50.0)
    assert "synth" in format_table(fig) and "start-up 2.0 s" in format_table(fig)


def test_an_older_run_entry_without_timing_still_gives_figures():
    fig = run_figures({"started": 1.0, "wall_s": 4.0, "rows": 8, "resumed_from": 0})
    assert fig["stages"] == [] and fig["rows_per_s"] == 2.0 and fig["startup_s"] is None


def test_add_span_keeps_one_span_per_stage():
    row = empty_row(id="x")
    add_span(row, "read", 1.0, 2.0)
    add_span(row, "ingest", 2.5, 3.0)
    assert row["spans"] == '{"ingest": [2.5, 3.0], "read": [1.0, 2.0]}'


def test_report_shows_the_last_runs_timing_table(tmp_path):
    import json

    from pipelines.report import build_context, render

    run = {"started": 0.0, "wall_s": 10.0, "rows": 5, "resumed_from": 0, "startup_s": 1.5, "first_row_s": 3.0,
           "stages": {"read": {"start_s": 1.5, "wall_s": 0.5, "busy_s": 0.25}}, "tokens": {"prompt": 0, "output": 0}}
    manifest = {"config_hash": "h", "config": {}, "stages": {"read": {"in": 5, "out": 5, "rejected": 0}},
                "parts": {"data": [], "rejects": []}, "tokens": {}, "runs": [run]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    ctx = build_context(tmp_path)
    assert ctx["timing"]["stages"][0]["busy_frac"] == 0.5
    page = render(ctx)
    assert "Timing of the last run" in page and "first row at the sink after 3.0 s" in page
