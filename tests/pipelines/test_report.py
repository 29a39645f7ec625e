"""Run report: rendered from a hand-built OUT folder, checked as HTML and in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from filters.stats import FilterStats
from pipelines.report import MAX_REJECTS_PER_REASON, MAX_SAMPLES, write_report
from pipelines.core.rows import REJECT_COLUMNS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL = '<script>alert("x")</script><img src="https://evil.example/p.png" onerror="alert(1)">'
COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30), (150, 60, 170)]


def png(color: tuple[int, int, int], size: int = 32) -> bytes:
    im = Image.new("RGB", (size, size), color)
    im.paste((255, 255, 255), (size // 4, size // 4, size // 2, size // 2))  # not a flat square
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def msg(role: str, text: str, image: bool = False) -> dict:
    content = ([{"type": "image", "text": None}] if image else []) + [{"type": "text", "text": text}]
    return {"role": role, "content": content}


def data_row(i: int, *, synthetic: bool, image: bytes, caption: str = "a caption") -> dict:
    messages = [msg("user", "Describe the image.", image=True), msg("assistant", caption)]
    if synthetic:
        messages += [msg("user", f"How many spots are there in image {i}?"), msg("assistant", f"{i} spots")]
    return {
        "id": f"row{i}", "source_id": f"in.json#{i}", "images": [{"bytes": image, "path": None}],
        "messages": messages, "task_kind": "mixed" if synthetic else "caption",
        "n_synthetic": 1 if synthetic else 0, "judge_scores": [0.9] if synthetic else [], "domain": "biomed",
    }


def reject_row(i: int, stage: str, reason: str, **fields) -> dict:
    row = {c: None for c in REJECT_COLUMNS}
    row.update(id=f"rej{i}", source_id=f"in.json#{100 + i}", stage=stage, reason=reason, detail="why", **fields)
    return row


def build_out(out: Path, *, n_rows: int = 8, metrics: list[str] | None = None, with_stats: bool = True) -> Path:
    from pipelines.sinks import DATASET_SCHEMA, REJECT_SCHEMA

    (out / "data").mkdir(parents=True)
    (out / "rejects").mkdir()
    rows = [data_row(i, synthetic=i % 2 == 1, image=png(COLORS[i % len(COLORS)]),
                     caption=EVIL if i == 1 else f"caption {i}") for i in range(n_rows)]
    pq.write_table(pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), out / "data" / "train-00000.parquet")
    rej = [reject_row(i, "judge", "judge_no", instruction=f"Is it red {i}?", label="no", score=0.1) for i in range(5)]
    rej += [reject_row(10, "ingest", "unreadable_image", caption=EVIL), reject_row(11, "dedup", "duplicate_id")]
    pq.write_table(pa.Table.from_pylist(rej, schema=REJECT_SCHEMA), out / "rejects" / "part-00000.parquet")
    stats = FilterStats()
    kept = {"instruction": "How many spots?", "precise": "3", "informative": "There are 3 spots.",
            "label": "yes", "score": 0.92, "answer": "3"}
    judged_no = {"stage": "judge", "reason": "judge_no", "label": "no", "score": 0.1, "instruction": "Is it red?"}
    stats.add_row({"tasks": json.dumps([kept] * 4), "task_rejects": json.dumps([judged_no] * 5)})
    manifest = {
        "format": 1, "config_hash": "abc123def", "config": {"domain": "biomed", "synth": {"model": "tiny://vlm"}},
        "created": "2026-11-22T10:00:00Z",
        "stages": {  # deliberately out of pipeline order: the report must sort them
            "mix": {"in": 9, "out": 9, "rejected": 0},
            "read": {"in": 10, "out": 10, "rejected": 0},
            "dedup": {"in": 9, "out": 8, "rejected": 1, "rejected_by_reason": {"duplicate_id": 1}},
            "ingest": {"in": 10, "out": 9, "rejected": 1, "rejected_by_reason": {"unreadable_image": 1}},
            "synth": {"in": 9, "out": 9, "rejected": 0, "busy_s": 3.2},
            "judge": {"in": 9, "out": 4, "rejected": 5, "rejected_by_reason": {"judge_no": 5}},
        },
        "parts": {"data": ["data/train-00000.parquet"], "rejects": ["rejects/part-00000.parquet"]},
        "tokens": {"prompt": 1234, "output": 567}, "runs": [{}],
        "versions": {"python": "3.11.9", "torch": "2.13.0+cpu"},
    }
    if with_stats:
        manifest["filter_stats"] = stats.as_dict()
    (out / "manifest.json").write_text(json.dumps(manifest))
    if metrics is not None:
        (out / "model").mkdir()
        (out / "model" / "metrics.jsonl").write_text("".join(line + "\n" for line in metrics))
    return out


def url_attributes(page: str) -> list[str]:
    """Values of every src/href attribute the browser would see (escaped text is not an attribute)."""
    found: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v or "" for k, v in attrs if k in ("src", "href", "xlink:href"))

    Collect().feed(page)
    return found


def loss_lines(n: int = 30) -> list[str]:
    return [json.dumps({"step": s, "epoch": 0, "loss": 3.0 / s, "lr": {"all": 1e-4}}) for s in range(1, n + 1)]


def test_report_escapes_data_and_stays_offline(tmp_path):
    page = write_report(build_out(tmp_path, metrics=loss_lines())).read_text()
    assert "<script>" not in page  # the caption's script tag arrives escaped
    assert "&lt;script&gt;alert" in page
    attrs = url_attributes(page)
    assert len(attrs) >= MAX_SAMPLES and all(a.startswith("data:image/png;base64,") for a in attrs), attrs
    assert "http://" not in page and 'src="https://' not in page
    assert "abc123def" in page and "2.13.0+cpu" in page


def test_report_content(tmp_path):
    page = write_report(build_out(tmp_path, metrics=loss_lines())).read_text()
    funnel = page[page.index('id="funnel"'):page.index('id="filter"')]
    order = [funnel.index(f">{s}<") for s in ("read", "ingest", "synth", "judge", "mix", "dedup")]
    assert order == sorted(order)
    assert "unreadable_image: 1" in funnel and "duplicate_id: 1" in funnel
    samples = page[page.index('id="samples"'):page.index('id="rejects"')]
    # synthetic rows come first and the count is capped
    assert samples.count('class="sample"') == min(MAX_SAMPLES, 8)
    assert samples.index("row1") < samples.index("row0")
    assert "How many spots are there in image 1?" in samples
    rejects = page[page.index('id="rejects"'):]
    assert rejects.count("<code>rej") == MAX_REJECTS_PER_REASON + 2  # 5 judge_no capped, 1 + 1 others
    assert rejects.index("ingest/unreadable_image") < rejects.index("judge/judge_no") < rejects.index("dedup/")
    assert page.count('<svg class="chart"') == 1 + 3 + 3 + 1  # funnel, types/labels/scores, 3 lengths, loss


def test_report_without_optional_parts_and_with_bad_inputs(tmp_path):
    out = build_out(tmp_path, metrics=["not json", json.dumps({"step": 1}), *loss_lines(3)], with_stats=False)
    # an image that does not decode, and a damaged part: both shown, neither fails the report
    from pipelines.sinks import DATASET_SCHEMA

    bad_image = data_row(99, synthetic=True, image=b"\x89PNG garbage")
    pq.write_table(pa.Table.from_pylist([bad_image], schema=DATASET_SCHEMA), out / "data" / "train-00001.parquet")
    (out / "data" / "train-00002.parquet").write_bytes(b"not parquet")
    m = json.loads((out / "manifest.json").read_text())
    m["parts"]["data"] += ["data/train-00001.parquet", "data/train-00002.parquet"]
    (out / "manifest.json").write_text(json.dumps(m))
    page = write_report(out).read_text()
    assert "No filter statistics" in page
    assert "image does not decode" in page
    assert "train-00002.parquet" in page[page.index("Unreadable parts"):]
    assert "2 lines without a usable step/loss skipped" in page
    assert 'id="eval"' not in page


def test_report_eval_table(tmp_path):
    out = build_out(tmp_path)
    (out / "eval").mkdir()
    scores = {"base": [{"task": "pathvqa", "metrics": {"accuracy": 0.5, "unparsed": 2}}],
              "adapted": [{"task": "pathvqa", "metrics": {"accuracy": 0.625, "unparsed": 1}}]}
    (out / "eval" / "report.json").write_text(json.dumps(scores))
    page = write_report(out).read_text()
    ev = page[page.index('id="eval"'):]
    assert "<th>base</th><th>adapted</th><th>delta</th>" in ev
    assert "<td>50.0</td><td>62.5</td><td>+12.5</td>" in ev
    assert "<td>2</td><td>1</td><td>-1</td>" in ev
    assert 'id="training"' not in page


def _chromium(args: list[str], profile: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars"]
    # Own session: on a timeout the whole Chromium process tree is killed, not just the launcher.
    proc = subprocess.Popen([CHROMIUM, *flags, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium: apt-get update && apt-get install -y chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    report = write_report(build_out(tmp_path / "out", metrics=loss_lines()))
    page = report.read_text()
    n_img = page.count("<img ")
    assert n_img >= MAX_SAMPLES
    # Probe copy: allow one inline script (the report itself forbids scripts) that records what the browser shows.
    # img-src stays data: only, so an image from anywhere else would fail to decode and be counted.
    probe = (
        "<script>window.addEventListener('load', () => { const im = [...document.images];"
        " const p = document.createElement('div'); p.id = 'probe';"
        " p.dataset.imgs = im.length; p.dataset.decoded = im.filter(i => i.complete && i.naturalWidth > 0).length;"
        " p.dataset.charts = document.querySelectorAll('svg.chart').length;"
        " p.dataset.drawn = [...document.querySelectorAll('svg.chart')].filter(s => s.getBBox().width > 0).length;"
        " document.body.appendChild(p); });</script></body>"
    )
    probed = page.replace("script-src 'none'", "script-src 'unsafe-inline'").replace("</body>", probe)
    assert probed != page
    probe_file = tmp_path / "probe.html"
    probe_file.write_text(probed)
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", probe_file.as_uri()], tmp_path / "p1")
    m = re.search(r'<div id="probe" data-imgs="(\d+)" data-decoded="(\d+)" data-charts="(\d+)" data-drawn="(\d+)"', dom)
    assert m, dom[-2000:]
    imgs, decoded, charts, drawn = map(int, m.groups())
    assert imgs == n_img and decoded == imgs
    assert charts == page.count('<svg class="chart"') == drawn and charts >= 5
    assert "<script>alert" not in dom and "&lt;script&gt;alert" in dom  # the caption stayed text

    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1100,4200", f"--screenshot={shot}", report.as_uri()], tmp_path / "p2")
    with Image.open(shot) as im:
        im = im.convert("RGB")
        colors = im.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, charts and images: not a blank page
    present = {c for _, c in colors}

    def near(target: tuple[int, int, int]) -> bool:
        return any(all(abs(a - b) <= 6 for a, b in zip(c, target, strict=True)) for c in present)

    assert near((0x2E, 0x7D, 0x32)) and near((0x15, 0x65, 0xC0))  # funnel green, bar blue
    assert sum(near(c) for c in COLORS) >= 3  # sample images are painted


def test_filter_stats_from_older_per_run_manifests(tmp_path):
    out = build_out(tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    stats = m.pop("filter_stats")
    m["filter_stats_runs"] = [stats, stats]  # two runs: counts add up
    (out / "manifest.json").write_text(json.dumps(m))
    page = write_report(out).read_text()
    assert "over 2 final rows" in page
    assert "<td class=\"l\">judge/judge_no</td><td>10</td>" in page


_SAMPLE_IN_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from pipelines.report import sample_rows
def hwm():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
out = Path(sys.argv[1])
base = hwm()
view, broken = sample_rows(out, json.loads((out / "manifest.json").read_text()))
print(json.dumps({"growth": hwm() - base, "n": len(view), "images": [len(v["images"]) for v in view]}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_sampling_a_caption_only_dataset_holds_a_row_group_not_the_dataset(tmp_path):
    """A caption-only run has no synthetic rows to stop the scan early: the report read every row it scanned,
    images included, and kept them (1.2 MiB per ingested image on the driver of a 400-image run). Now the scan
    skips the images column and only the chosen rows' images are read, a row group at a time."""
    import numpy as np

    from pipelines.core.contract import DATASET_SCHEMA, write_rows

    rng = np.random.default_rng(0)
    noise = []
    for _ in range(16):  # 16 distinct incompressible images, reused: writing 2,400 PNGs would dominate the test
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, format="PNG")
        noise.append(buf.getvalue())
    out = tmp_path / "out"
    parts = []
    for k in range(2):
        rows = [data_row(k * 2400 + i, synthetic=False, image=noise[i % 16]) for i in range(2400)]
        parts.append(write_rows(out / "data" / f"train-{k:05d}.parquet", rows, DATASET_SCHEMA))
    (out / "manifest.json").write_text(json.dumps({"parts": {"data": [str(p.relative_to(out)) for p in parts]}}))
    dataset_bytes = 4800 * len(noise[0])  # ~236 MiB of image bytes
    res = subprocess.run([os.sys.executable, "-c", _SAMPLE_IN_FRESH_PROCESS, str(out)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["n"] == MAX_SAMPLES and got["images"] == [1] * MAX_SAMPLES
    # the old scan held every scanned row (growth ~2x the dataset's bytes); now ~58 MiB: imports, one row group
    assert got["growth"] < dataset_bytes / 3, got
