"""The run report: a self-contained `OUT/report.html` built from what a run left in OUT.

Reads `manifest.json` (stage counts, filter stats, config, versions), a sample of `data/*.parquet`
and `rejects/*.parquet`, `model/metrics.jsonl` (training loss) and `eval/report.json` (the tables
of posttrain/eval/report.py) when present. Charts are inline SVG drawn here, images are base64
data URIs, and a Content-Security-Policy forbids every network fetch, so the page opens offline
and shows exactly what is in the file. All text from data is escaped (captions are untrusted).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator, Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.core.files import atomic_write_bytes
from pipelines.manifest import MANIFEST, STAGE_ORDER
from pipelines.timing import run_figures

log = logging.getLogger(__name__)

REPORT = "report.html"
TASK_STAGES = frozenset({"judge", "compose"})  # these stages count tasks, the others rows
MAX_SAMPLES = 6  # dataset rows shown
MAX_REJECTS_PER_REASON = 3
MAX_SCAN_ROWS = 5000  # rows read per folder when looking for samples: bounds the cost on big runs
_READ_BUFFER = 1 << 20  # stream column chunks from disk: a part's chunk of images can be gigabytes
THUMB_PX = 224  # longest side of a sample image
MAX_TEXT = 600  # characters of one message or reject field shown
MAX_LOSS_POINTS = 1000
ANSWER_NAMES = {"precise": "precise answer", "informative": "informative answer", "answer": "training answer"}
COLORS = {"kept": "#2e7d32", "rejected": "#c62828", "bar": "#1565c0", "line": "#6a1b9a", "grid": "#ddd"}


# -- inline SVG charts ---------------------------------------------------------------------------


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, s: Any, anchor: str = "start", size: int = 11, fill: str = "#333") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}">'
        f"{escape(str(s))}</text>"
    )


def funnel_svg(stages: list[tuple[str, dict[str, Any]]]) -> str:
    """One stacked bar per stage (kept | rejected), scaled to the largest `in`."""
    w, label_w, row_h = 760, 90, 26
    top = max([int(c.get("in", 0)) for _, c in stages] + [1])
    scale = (w - label_w - 230) / top
    body = []
    for i, (name, c) in enumerate(stages):
        y = 8 + i * row_h
        kept, rej = int(c.get("out", 0)), int(c.get("rejected", 0))
        unit = "tasks" if name in TASK_STAGES else "rows"
        body.append(_text(label_w - 8, y + 15, name, "end", 12))
        body.append(f'<rect x="{label_w}" y="{y}" width="{kept * scale:.1f}" height="18" fill="{COLORS["kept"]}"/>')
        body.append(
            f'<rect x="{label_w + kept * scale:.1f}" y="{y}" width="{rej * scale:.1f}" height="18" '
            f'fill="{COLORS["rejected"]}"/>'
        )
        note = f"in {c.get('in', 0)} {unit}: kept {kept}, rejected {rej}"
        body.append(_text(label_w + (kept + rej) * scale + 6, y + 14, note))
    return _svg(w, 16 + len(stages) * row_h, body, "stage funnel: kept and rejected per stage")


def hbar_svg(items: Sequence[tuple[str, float]], title: str, color: str = COLORS["bar"]) -> str:
    """Horizontal bars with their values, one per (label, value)."""
    w, label_w, row_h = 470, 110, 22
    top = max([v for _, v in items] + [1])
    scale = (w - label_w - 60) / top
    body = []
    for i, (label, v) in enumerate(items):
        y = 6 + i * row_h
        body.append(_text(label_w - 8, y + 13, label, "end"))
        body.append(f'<rect x="{label_w}" y="{y}" width="{v * scale:.1f}" height="16" fill="{color}"/>')
        body.append(_text(label_w + v * scale + 5, y + 13, f"{v:g}"))
    return _svg(w, 12 + len(items) * row_h, body, title)


def histogram_svg(
    bins: Sequence[str], counts: Sequence[float], title: str, xlabel: str, w: int = 470, stagger_labels: bool = False
) -> str:
    """Vertical bars over named bins, counts above the bars."""
    h, left, bottom, label_size = 230, 20, 54, 9
    n = max(len(counts), 1)
    top = max([*counts, 1])
    bw = (w - left - 10) / n
    body = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#999"/>']
    for i, (name, c) in enumerate(zip(bins, counts, strict=True)):
        bh = (h - bottom - 20) * c / top
        x = left + i * bw
        body.append(
            f'<rect x="{x + 2:.1f}" y="{h - bottom - bh:.1f}" width="{bw - 4:.1f}" height="{bh:.1f}" '
            f'fill="{COLORS["bar"]}"/>'
        )
        if c:
            body.append(_text(x + bw / 2, h - bottom - bh - 4, f"{c:g}", "middle", 10))
        stagger = 11 * (i % 2) if stagger_labels else 0  # narrow bins: alternate rows so labels do not overlap
        body.append(_text(x + bw / 2, h - bottom + 14 + stagger, name, "middle", label_size))
    body.append(_text(w / 2, h - 8, xlabel, "middle"))
    return _svg(w, h, body, title)


def line_svg(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str) -> str:
    """A polyline with min/max tick labels on both axes."""
    w, h, left, bottom, pad = 620, 260, 60, 40, 12
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    xs_span, ys_span = (x1 - x0) or 1, (y1 - y0) or 1

    def px(x: float) -> float:
        return left + (x - x0) / xs_span * (w - left - pad)

    def py(y: float) -> float:
        return pad + (1 - (y - y0) / ys_span) * (h - bottom - pad)

    body = [
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - pad}" y2="{h - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{h - bottom}" stroke="#999"/>',
    ]
    for frac in (0.25, 0.5, 0.75):
        y = pad + frac * (h - bottom - pad)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - pad}" y2="{y:.1f}" stroke="{COLORS["grid"]}"/>')
    pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    body.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS["line"]}" stroke-width="2"/>')
    if len(xs) == 1:
        body.append(f'<circle cx="{px(xs[0]):.1f}" cy="{py(ys[0]):.1f}" r="3" fill="{COLORS["line"]}"/>')
    body += [
        _text(left - 4, py(y1) + 4, f"{y1:.4g}", "end", 10),
        _text(left - 4, py(y0) + 4, f"{y0:.4g}", "end", 10),
        _text(left, h - bottom + 14, f"{x0:g}", "middle", 10),
        _text(w - pad, h - bottom + 14, f"{x1:g}", "middle", 10),
        _text((left + w) / 2, h - 8, xlabel, "middle"),
        _text(14, h / 2, ylabel, "middle"),
    ]
    return _svg(w, h, body, title)


# -- reading OUT ---------------------------------------------------------------------------------


def _iter_rows(paths: Sequence[Path], exclude: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """Rows of the given Parquet parts (all columns but `exclude`), at most MAX_SCAN_ROWS, each with `_part` /
    `_row` (where it is); an unreadable part is logged and skipped."""
    seen = 0
    for k, p in enumerate(paths):
        try:
            pf = pq.ParquetFile(p, buffer_size=_READ_BUFFER)
            cols = [n for n in pf.schema_arrow.names if n not in exclude]
            offset = 0
            for batch in pf.iter_batches(batch_size=256, columns=cols):
                for i, row in enumerate(batch.to_pylist()):
                    yield {**row, "_part": k, "_row": offset + i}
                    seen += 1
                    if seen >= MAX_SCAN_ROWS:
                        return
                offset += batch.num_rows
        except Exception as e:  # a report must still render when one part is damaged; the page says so
            log.warning("report: cannot read %s: %s", p, e)
            yield {"_unreadable": f"{p.name}: {type(e).__name__}: {e}"}


def _images_of(paths: Sequence[Path], wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list]:
    """The `images` cell of each (part, row) in `wanted`, read a few rows at a time and only up to the last
    wanted row of a part: the scan for samples never holds a part's images (a dataset of large images would
    otherwise put every image on the heap of the process that writes the report)."""
    found: dict[tuple[int, int], list] = {}
    by_part: dict[int, set[int]] = {}
    for k, r in wanted:
        by_part.setdefault(k, set()).add(r)
    for k, rows in sorted(by_part.items()):
        try:
            pf = pq.ParquetFile(paths[k], buffer_size=_READ_BUFFER)
            if "images" not in pf.schema_arrow.names:
                continue
            offset, last = 0, max(rows)
            for batch in pf.iter_batches(batch_size=8, columns=["images"]):
                for r in rows & set(range(offset, offset + batch.num_rows)):
                    found[(k, r)] = batch.column(0)[r - offset].as_py() or []
                offset += batch.num_rows
                if offset > last:
                    break
        except Exception as e:  # the sample then shows no image; the scan already reported a broken part
            log.warning("report: cannot read images of %s: %s", paths[k], e)
    return found


def _parts(out: Path, manifest: dict[str, Any], kind: str) -> list[Path]:
    listed = manifest.get("parts", {}).get(kind)
    if listed is not None:
        return [out / p for p in listed]
    return sorted((out / kind).glob("*.parquet"))


def thumbnail_uri(data: bytes | None) -> str | None:
    """A PNG data URI of the image scaled to THUMB_PX on its longest side; None when it does not decode."""
    from PIL import Image

    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            if max(im.size) < 64:  # tiny test images: scale up so they are visible, keep pixels sharp
                k = 64 // max(im.size) + 1
                im = im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except Exception as e:  # untrusted bytes: any decoder error means "cannot show", never a failed report
        log.warning("report: sample image does not decode: %s", e)
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _clip(s: Any, n: int = MAX_TEXT) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[:n] + " [...]"


def sample_rows(out: Path, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Up to MAX_SAMPLES dataset rows, synthetic-task rows first, as view dicts; plus unreadable parts."""
    synthetic, caption, broken = [], [], []
    parts = _parts(out, manifest, "data")
    for row in _iter_rows(parts, exclude=["images"]):
        if "_unreadable" in row:
            broken.append(row["_unreadable"])
            continue
        group = synthetic if int(row.get("n_synthetic") or 0) > 0 else caption
        if len(group) < MAX_SAMPLES:  # bounded: a caption-only run must not keep every row it scans
            group.append(row)
        if len(synthetic) >= MAX_SAMPLES:
            break
    chosen = (synthetic + caption)[:MAX_SAMPLES]
    images_of = _images_of(parts, [(r["_part"], r["_row"]) for r in chosen])
    view = []
    for row in chosen:
        images = [thumbnail_uri((im or {}).get("bytes")) for im in images_of.get((row["_part"], row["_row"]), [])]
        turns = []
        for m in row.get("messages") or []:
            text = " ".join(c.get("text") or "" for c in m.get("content") or [] if c.get("type") == "text")
            n_img = sum(1 for c in m.get("content") or [] if c.get("type") == "image")
            turns.append({"role": m.get("role", ""), "text": _clip(text), "n_images": n_img})
        view.append({
            "id": row.get("id", ""), "source_id": row.get("source_id", ""), "task_kind": row.get("task_kind", ""),
            "n_synthetic": row.get("n_synthetic", 0),
            "judge_scores": ", ".join(f"{s:.2f}" for s in row.get("judge_scores") or [] if s is not None),
            "images": images, "turns": turns,
        })
    return view, broken


REJECT_FIELDS = ("detail", "caption", "instruction", "precise", "informative", "label", "score", "text")


def sample_rejects(out: Path, manifest: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Up to MAX_REJECTS_PER_REASON reject records per "stage/reason", in pipeline stage order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    broken = []
    for row in _iter_rows(_parts(out, manifest, "rejects")):
        if "_unreadable" in row:
            broken.append(row["_unreadable"])
            continue
        key = f"{row.get('stage', '')}/{row.get('reason', '')}"
        group = groups.setdefault(key, [])
        if len(group) < MAX_REJECTS_PER_REASON:
            fields = [(f, _clip(row.get(f), 300)) for f in REJECT_FIELDS if row.get(f) not in (None, "")]
            group.append({"id": row.get("id", ""), "source_id": row.get("source_id", ""), "fields": fields})
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    ordered = sorted(groups, key=lambda k: (rank.get(k.split("/")[0], len(rank)), k))
    return {k: groups[k] for k in ordered}, broken


def read_loss(path: Path) -> tuple[list[float], list[float], int]:
    """(steps, losses, number of lines skipped) from metrics.jsonl; thinned to MAX_LOSS_POINTS."""
    steps, losses, skipped = [], [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            step, loss = float(rec["step"]), float(rec["loss"])
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if loss == loss:  # NaN loss cannot be drawn; it is counted as skipped
            steps.append(step)
            losses.append(loss)
        else:
            skipped += 1
    if skipped:
        log.warning("report: %d lines of %s have no usable step/loss", skipped, path)
    k = max(1, -(-len(steps) // MAX_LOSS_POINTS))
    return steps[::k], losses[::k], skipped


def eval_table(path: Path) -> dict[str, Any]:
    """Header and formatted rows from eval/report.json ({model: [{task, metrics}]})."""
    from posttrain.eval.report import COUNT_METRICS, build_table

    models, table = build_table(json.loads(path.read_text(encoding="utf-8")))

    def fmt(metric: str, v: float | None) -> str:
        return "-" if v is None else (f"{v:.0f}" if metric in COUNT_METRICS else f"{100 * v:.1f}")

    rows = []
    for task, metric, vals in table:
        cells = [task, metric, *(fmt(metric, v) for v in vals)]
        if len(models) > 1:
            a, b = vals[0], vals[-1]
            cells.append("-" if a is None or b is None else fmt(metric, b - a) if metric in COUNT_METRICS
                         else f"{100 * (b - a):+.1f}")
        rows.append(cells)
    return {"header": ["task", "metric", *models] + (["delta"] if len(models) > 1 else []), "rows": rows}


# -- assembling the page -------------------------------------------------------------------------


def _ordered_stages(stages: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    known = [(s, stages[s]) for s in STAGE_ORDER if s in stages]
    return known + [(s, c) for s, c in stages.items() if s not in STAGE_ORDER]


def filter_stats(manifest: dict[str, Any]) -> dict[str, Any]:
    """`filter_stats` of the manifest; older manifests kept one dict per run in `filter_stats_runs`."""
    if manifest.get("filter_stats"):
        return manifest["filter_stats"]
    runs = manifest.get("filter_stats_runs") or []
    if not runs:
        return {}
    from filters.stats import FilterStats

    total = FilterStats()
    for d in runs:
        total.merge(FilterStats.from_dict(d))
    return total.as_dict()


def build_context(out: Path) -> dict[str, Any]:
    """Everything the template shows, with charts already rendered to SVG strings."""
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    stages = _ordered_stages(manifest.get("stages", {}))
    fs = filter_stats(manifest)
    charts: dict[str, str] = {}
    if stages:
        charts["funnel"] = funnel_svg(stages)
    types = fs.get("task_types", {}).get("kept", {})
    if any(types.values()):
        charts["task_types"] = hbar_svg(sorted(types.items(), key=lambda kv: -kv[1]), "kept task types")
    labels = fs.get("labels", {})
    if any(labels.values()):
        charts["labels"] = hbar_svg(list(labels.items()), "judge labels (all judged tasks)")
    hist = fs.get("score_histogram")
    if hist and any(hist.get("counts", [])):
        e = hist["edges"]
        names = [f"{e[i]:.1f}" for i in range(len(hist["counts"]))]
        charts["scores"] = histogram_svg(names, hist["counts"], "judge score histogram", "judge score (bin start)")
    lengths = {
        f: histogram_svg(h["bins"], h["counts"], f"{name} length", f"words in the {name}", w=325, stagger_labels=True)
        for f, h in fs.get("answer_words", {}).items()
        for name in [ANSWER_NAMES.get(f, f)]
        if any(h.get("counts", []))
    }
    samples, broken_data = sample_rows(out, manifest)
    rejects, broken_rej = sample_rejects(out, manifest)
    loss, loss_note = None, ""
    metrics = out / "model" / "metrics.jsonl"
    if metrics.is_file():
        steps, losses, skipped = read_loss(metrics)
        if steps:
            loss = line_svg(steps, losses, "training loss per step", "optimizer step", "loss")
            loss_note = f"{len(steps)} points, last loss {losses[-1]:.4f}"
        if skipped:
            loss_note += f" ({skipped} lines without a usable step/loss skipped)"
    ev, ev_png = None, None
    if (out / "eval" / "report.json").is_file():
        ev = eval_table(out / "eval" / "report.json")
    png = out / "eval" / "report.png"
    if png.is_file() and png.stat().st_size < 4_000_000:
        ev_png = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    cfg = manifest.get("config", {})
    return {
        "domain": cfg.get("domain", ""),
        "config_hash": manifest.get("config_hash", ""),
        "created": manifest.get("created", ""),
        "updated": manifest.get("updated", ""),
        "stages": [
            {"name": s, "unit": "tasks" if s in TASK_STAGES else "rows", "in": c.get("in", 0), "out": c.get("out", 0),
             "rejected": c.get("rejected", 0), "reasons": sorted(c.get("rejected_by_reason", {}).items()),
             "busy_s": c.get("busy_s")}
            for s, c in stages
        ],
        "tokens": manifest.get("tokens", {}),
        "timing": run_figures(manifest["runs"][-1]) if manifest.get("runs") and "stages" in manifest["runs"][-1] else None,
        "has_filter_stats": bool(fs),
        "filter_rows": fs.get("rows"),
        "task_reject_reasons": sorted(fs.get("task_reject_reasons", {}).items()),
        "charts": charts,
        "lengths": lengths,
        "samples": samples,
        "rejects": rejects,
        "broken_parts": broken_data + broken_rej,
        "loss": loss,
        "loss_note": loss_note,
        "eval": ev,
        "eval_png": ev_png,
        "versions": sorted(manifest.get("versions", {}).items()),
        "runs": len(manifest.get("runs", [])),
        "config_json": json.dumps(cfg, indent=2, sort_keys=True, default=str),
    }


def render(context: dict[str, Any]) -> str:
    import jinja2
    from markupsafe import Markup

    source = resources.files("pipelines.templates").joinpath("report.html.jinja").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # SVG is built here with every data string escaped, so it is marked safe; everything else autoescapes.
    ctx = dict(context)
    ctx["charts"] = {k: Markup(v) for k, v in context["charts"].items()}
    ctx["lengths"] = {k: Markup(v) for k, v in context["lengths"].items()}
    ctx["loss"] = Markup(context["loss"]) if context["loss"] else None
    return env.from_string(source).render(**ctx)


def write_report(out: Path) -> Path:
    """Render OUT/report.html (atomically) from the files a run left in `out`; returns its path."""
    out = Path(out)
    page = render(build_context(out))
    path = out / REPORT
    atomic_write_bytes(path, page.encode("utf-8"))
    log.info("run report written to %s (%d kB)", path, len(page) // 1024)
    return path
