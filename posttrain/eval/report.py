"""Comparison report: base vs adapted models per task and metric, as Markdown, HTML and a bar chart.

Input: `{model name: [score dicts from runner.score]}` (each score dict carries `task` and
`metrics`, optionally `reference_metrics`: scored as the AdaMLLM reference code does, shown as
"<metric> (reference-compatible)"). Fractions are shown as percentages like the papers' tables; counts
(`unparsed`) as is.
The last column is `delta` = last model - first model when there are at least two.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COUNT_METRICS = frozenset({"unparsed"})
Table = list[tuple[str, str, list[float | None]]]  # (task, metric, one value per model)


def build_table(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[list[str], Table]:
    """Rows (task, metric, values per model) in first-seen order; a missing value is None."""
    models = list(results)
    order: list[tuple[str, str]] = []
    values: dict[tuple[str, str, str], float] = {}
    for model, scores in results.items():
        for s in scores:
            ref = {f"{k} (reference-compatible)": v for k, v in (s.get("reference_metrics") or {}).items()}
            for metric, v in {**s["metrics"], **ref}.items():
                key = (s["task"], metric)
                if key not in order:
                    order.append(key)
                values[(model, *key)] = float(v)
    return models, [(t, m, [values.get((model, t, m)) for model in models]) for t, m in order]


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if metric in COUNT_METRICS else f"{100 * v:.1f}"


def _delta(metric: str, vals: list[float | None]) -> str:
    if len(vals) < 2 or vals[0] is None or vals[-1] is None:
        return "-"
    d = vals[-1] - vals[0]
    return f"{d:+.0f}" if metric in COUNT_METRICS else f"{100 * d:+.1f}"


def to_markdown(models: list[str], table: Table) -> str:
    head = ["task", "metric", *models] + (["delta"] if len(models) > 1 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, metric, vals in table:
        cells = [task, metric, *(_fmt(metric, v) for v in vals)] + ([_delta(metric, vals)] if len(models) > 1 else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nScores in % (counts for `unparsed`).\n"


def to_html(models: list[str], table: Table, chart: str | None = None) -> str:
    e = html.escape
    head = ["task", "metric", *models] + (["delta"] if len(models) > 1 else [])
    rows = []
    for task, metric, vals in table:
        cells = [task, metric, *(_fmt(metric, v) for v in vals)] + ([_delta(metric, vals)] if len(models) > 1 else [])
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    img = f'<p><img src="{e(chart)}" alt="scores per task and model"></p>' if chart else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}</style></head><body><h1>Evaluation report</h1>"
        "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table><p>Scores in % (counts for unparsed).</p>" + img + "</body></html>\n"
    )


def bar_chart(models: list[str], table: Table, path: Path) -> Path:
    """Grouped bars: one group per (task, metric) in %, one bar per model (count metrics left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r[1] not in COUNT_METRICS]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) * max(1, len(models)) / 2 + 2), 4))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        xs = [i + j * width for i in range(len(rows))]
        ax.bar(xs, [100 * (r[2][j] or 0.0) for r in rows], width, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels([f"{t}\n{m}" for t, m, _ in rows], fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def write_report(results: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.html, report.png and report.json under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, table = build_table(results)
    png = bar_chart(models, table, out / "report.png")
    paths = {"png": png, "md": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    paths["md"].write_text(to_markdown(models, table), encoding="utf-8")
    paths["html"].write_text(to_html(models, table, png.name), encoding="utf-8")
    paths["json"].write_text(json.dumps({m: list(s) for m, s in results.items()}, indent=1), encoding="utf-8")
    log.info("report written to %s", out)
    return paths
