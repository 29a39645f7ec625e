"""`pipelines/bench.py memory`: memory that shows streaming, and a driver that stays flat at a million rows.

    bench.py memory driver [--rows 10000,1000000] [--read-only]   # driver peak at 10k vs 1M JSON records
    bench.py memory images [--sizes 100,200,400] [--formats json,parquet,webdataset]   # MiB per 1k JPEGs

Every run is `pipelines/run.py` (the real CLI) in a subprocess whose memory is sampled every 0.25 s with
psutil `memory_full_info`: the driver (the CLI process) by USS (memory only it holds) and PSS, and every
other process of its tree (Ray's GCS, raylet, workers, actors) by PSS summed, which counts a shared page
once across the processes that share it (summed RSS counts it once per process). Peaks are the maxima over
the samples, so a spike shorter than 0.25 s can be missed.

`driver` generates N JSON records over a few tiny images (captions differ, so every id does). With
`--read-only` the ingest stage is replaced by nothing (read -> sink): the driver does the same work per
row (planning, resume index, sink dedup, Parquet parts) while a million image decodes, which happen in
workers, are skipped so the run fits in minutes on a small machine.

`images` generates realistic photographs-sized JPEGs (random sizes between --min-px and --max-px on each
side, smooth content plus noise, quality 90) and runs read -> ingest -> sink for each size and format; per
format it also reports the marginal MiB per 1k images between the smallest and the largest size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository root (this file is pipelines/benches/memory.py)
USER = "<image>Describe the image."


def _status_bytes(pid: int, keys: tuple[str, ...] = ("RssAnon", "RssShmem")) -> list[int]:
    """The driver's private heap (RssAnon) and its mapped shared memory (RssShmem: Ray's object store pages it
    has read), in bytes, from /proc (Linux; 0s elsewhere). USS counts both, so it cannot tell a heap that grows
    from object-store pages the driver touched once."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        return [int(fields[k].split()[0]) * 1024 for k in keys]
    except (OSError, KeyError, ValueError):
        return [0 for _ in keys]


def _sample(pid: int) -> tuple[int, ...]:
    """(driver USS, driver PSS, PSS summed over the rest of the tree, driver RssAnon, driver RssShmem) in bytes;
    0s once the process is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        kids = root.children(recursive=True)
        info = root.memory_full_info()
    except psutil.Error:
        return 0, 0, 0, 0, 0
    rest = 0
    for k in kids:
        try:
            rest += k.memory_full_info().pss
        except psutil.Error:
            pass
    return (info.uss, info.pss, rest, *_status_bytes(pid))


def measured_run(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.25) -> dict[str, Any]:
    """Run `cmd` and sample its memory; raise with the tail of stderr if it fails."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        peak = [0, 0, 0, 0, 0]
        while proc.poll() is None:
            peak = [max(a, b) for a, b in zip(peak, _sample(proc.pid))]
            time.sleep(interval)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {tail}")
    mib = lambda b: round(b / 2**20, 1)
    return {"driver_uss_mib": mib(peak[0]), "driver_pss_mib": mib(peak[1]), "workers_pss_mib": mib(peak[2]),
            "driver_anon_mib": mib(peak[3]), "driver_shmem_mib": mib(peak[4]), "wall_s": round(time.monotonic() - t0, 1)}


def _cli(src: Path, out: Path, fmt: str, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "pipelines" / "run.py"), "--domain", "biomed", "--profile", "tiny", "--input",
            str(src), "--out", str(out), "--no-progress", "--stages", "ingest", f"input.format={fmt}", *extra]


def _run_figures(out: Path) -> dict[str, Any]:
    """Per-stage figures of the run in `out` (also printed as a table on stderr)."""
    from pipelines.timing import format_table, run_figures

    fig = run_figures(json.loads((out / "manifest.json").read_text())["runs"][-1])
    print(format_table(fig), file=sys.stderr)
    return fig


# -- driver at 1M rows -------------------------------------------------------------------------------


def write_many_records(folder: Path, n: int, n_images: int = 16) -> Path:
    """A JSON list of n AdaMLLM records over n_images tiny PNGs, written incrementally (never held whole)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        Image.new("RGB", (32, 32), (k * 15 % 256, 90, 160)).save(folder / "images" / f"{k}.png")
    path = folder / "records.json"
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(n):
            rec = {"images": [f"images/{i % n_images}.png"], "messages": [
                {"role": "user", "content": USER},
                {"role": "assistant", "content": f"A chest X-ray, record {i}, with no abnormal findings."}]}
            f.write(("," if i else "") + json.dumps(rec) + "\n")
        f.write("]\n")
    return path


_READ_ONLY = """
import sys
from pipelines import pipeline
pipeline.stage_calls = lambda cfg: []  # read -> sink only (the driver-memory figure)
sys.argv = [sys.argv[0], *sys.argv[1:]]
from pipelines.run import main
sys.exit(main())
"""


def bench_driver(rows: list[int], read_only: bool, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"read_only": read_only, "runs": {}}
    for n in rows:
        src = write_many_records(work / f"src{n}", n)
        cmd = _cli(src, work / f"out{n}", "json", ["rows_per_shard=10000"])
        if read_only:
            cmd = [sys.executable, "-c", _READ_ONLY, *cmd[2:]]
        r = measured_run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
        r["stages"] = _run_figures(work / f"out{n}")
        res["runs"][n] = r
        print(json.dumps({"rows": n, **{k: v for k, v in r.items() if k != "stages"}}), file=sys.stderr)
    lo, hi = min(rows), max(rows)
    res["driver_uss_ratio"] = round(res["runs"][hi]["driver_uss_mib"] / res["runs"][lo]["driver_uss_mib"], 3)
    res["driver_pss_ratio"] = round(res["runs"][hi]["driver_pss_mib"] / res["runs"][lo]["driver_pss_mib"], 3)
    return res


# -- realistic images, three formats ----------------------------------------------------------------


def _jpeg(i: int, min_px: int, max_px: int) -> tuple[bytes, str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    w, h = (int(v) for v in rng.integers(min_px, max_px + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / rng.uniform(20, 80) + c) * np.cos(yy / rng.uniform(20, 80) - c) for c in (0, 1, 2)], -1)
    img = ((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue(), f"A {w}x{h} scan, image {i}, with no abnormal findings."


def write_image_inputs(folder: Path, n: int, min_px: int, max_px: int) -> dict[str, Path]:
    """The same n JPEGs and captions as a JSON list + image folder, one Parquet file and one tar shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "json" / "images").mkdir(parents=True, exist_ok=True)
    recs, table = [], {"image": [], "caption": []}
    with tarfile.open(folder / "shard.tar", "w") as tar:
        for i in range(n):
            data, caption = _jpeg(i, min_px, max_px)
            (folder / "json" / "images" / f"{i:06d}.jpg").write_bytes(data)
            recs.append({"images": [f"images/{i:06d}.jpg"], "messages": [
                {"role": "user", "content": USER}, {"role": "assistant", "content": caption}]})
            table["image"].append({"bytes": data, "path": None})
            table["caption"].append(caption)
            for name, payload in ((f"{i:06d}.jpg", data), (f"{i:06d}.txt", caption.encode())):
                ti = tarfile.TarInfo(name)
                ti.size = len(payload)
                tar.addfile(ti, io.BytesIO(payload))
    (folder / "json" / "records.json").write_text(json.dumps(recs))
    pq.write_table(pa.table(table), folder / "data.parquet", row_group_size=64)
    return {"json": folder / "json" / "records.json", "parquet": folder / "data.parquet", "webdataset": folder / "shard.tar"}


def bench_images(sizes: list[int], formats: list[str], min_px: int, max_px: int, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"min_px": min_px, "max_px": max_px, "runs": []}
    for n in sizes:
        inputs = write_image_inputs(work / f"img{n}", n, min_px, max_px)
        input_mib = round(os.path.getsize(inputs["webdataset"]) / 2**20, 1)
        for fmt in formats:
            out = work / f"out-{fmt}-{n}"
            r = measured_run(_cli(inputs[fmt], out, fmt, ["rows_per_shard=64"]), env={**os.environ, "PYTHONPATH": str(ROOT)})
            r.update({"format": fmt, "images": n, "input_mib": input_mib,
                      "driver_uss_mib_per_1k": round(r["driver_uss_mib"] * 1000 / n, 1),
                      "workers_pss_mib_per_1k": round(r["workers_pss_mib"] * 1000 / n, 1),
                      "stages": _run_figures(out)})
            res["runs"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "stages"}), file=sys.stderr)
    res["marginal_mib_per_1k"] = marginal(res["runs"]) if len(sizes) > 1 else {}
    return res


def marginal(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per format, MiB per 1k images between the smallest and the largest size: the growth with images, without
    the fixed floor (Ray, libraries) that dividing one run's peak by its image count would include."""
    out = {}
    for fmt in dict.fromkeys(r["format"] for r in runs):
        rs = sorted((r for r in runs if r["format"] == fmt), key=lambda r: r["images"])
        lo, hi = rs[0], rs[-1]
        d = (hi["images"] - lo["images"]) / 1000
        out[fmt] = {k: round((hi[k] - lo[k]) / d, 1)
                    for k in ("driver_uss_mib", "driver_anon_mib", "driver_shmem_mib", "workers_pss_mib") if k in hi}
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py memory", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("driver", help="driver peak memory at few vs many JSON records")
    d.add_argument("--rows", default="10000,1000000", help="Comma-separated record counts.")
    d.add_argument("--read-only", action="store_true", help="Skip ingest (read -> sink), see the module docstring.")
    i = sub.add_parser("images", help="MiB per 1k realistic JPEGs for JSON, Parquet and WebDataset inputs")
    i.add_argument("--sizes", default="100,200,400", help="Comma-separated image counts (>= 3 for a trend).")
    i.add_argument("--formats", default="json,parquet,webdataset", help="Input formats to measure.")
    i.add_argument("--min-px", type=int, default=512, help="Smallest image side.")
    i.add_argument("--max-px", type=int, default=1024, help="Largest image side.")
    for s in (d, i):
        s.add_argument("--work", default="", help="Folder for generated inputs and outputs (default: a temp folder).")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-memory-"))
    if args.what == "driver":
        res = bench_driver([int(x) for x in args.rows.split(",")], args.read_only, work)
    else:
        res = bench_images([int(x) for x in args.sizes.split(",")], args.formats.split(","), args.min_px, args.max_px, work)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
