"""A successful run's console: progress, the summary, the real warnings, and nothing that looks like an error.

Runs the whole job a newcomer runs with `make demo` (ingest, synth, judge, mix with vLLM engines in Ray
actors, then train and eval in the same process), in miniature and output not on a terminal, and reads
everything it printed on stdout and stderr. It also reads what the Ray actors wrote to their own stderr
logs: an actor that exits just before `ray.shutdown()` may not get its last lines forwarded to the
console, so the console alone would let a crash at exit pass now and then.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# Lines a newcomer reads as a crash: tracebacks, exception names, engine/worker processes dying, and
# Ray's banner about repeated lines (which only appears when something is printed over and over).
ALARMS = re.compile(r"Traceback|\w*Error\b|exited unexpectedly|died unexpectedly|repeated \d+x|deduplicates logs")


def _input(tmp_path: Path) -> Path:
    """Four records of the embedded sample and one whose caption is only NUL bytes (a real reject)."""
    from pipelines.fixtures.sample_data import ensure_sample

    sample = ensure_sample("biomed")
    records = json.loads(sample.read_text())[:4]
    bad = json.loads(json.dumps(records[0]))
    bad["messages"][1]["content"] = "\x00\x00\x00"
    src = tmp_path / "pairs.json"
    src.write_text(json.dumps(records + [bad]))
    return sample.parent


def _actor_logs(ray_tmp: Path) -> tuple[list[str], list[str]]:
    """What the run's Ray workers printed to stderr that looks like an alarm, and the worker exits at
    which Ray had to kill child processes (an engine core or resource tracker still running)."""
    alarms, killed = [], []
    for err in sorted(ray_tmp.glob("ray/session_*/logs/worker-*.err")):
        alarms += [f"{err.name}: {line}" for line in err.read_text(errors="replace").splitlines()
                   if ALARMS.search(line)]
    for log in sorted(ray_tmp.glob("ray/session_*/logs/python-core-worker-*.log")):
        killed += [f"{log.name}: {m.group(0)}"
                   for m in re.finditer(r"Child process pids: \d[\d, ]*", log.read_text(errors="replace"))]
    return alarms, killed


def test_successful_tiny_job_prints_progress_summary_and_no_alarms(tmp_path):
    images = _input(tmp_path)
    out = tmp_path / "out"
    # A short private Ray temp dir: this run's worker logs only (other Ray jobs on the machine write to
    # /tmp/ray), and short enough for Ray's unix socket paths.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "pipelines" / "run.py"), "--domain", "biomed", "--profile", "tiny",
             "--input", str(tmp_path / "pairs.json"), "--image-root", str(images), "--out", str(out),
             "--stages", "ingest,synth,judge,mix,train,eval", "eval.limit=2"],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        )
        text = proc.stdout + proc.stderr
        assert proc.returncode == 0, text[-4000:]
        alarms = [line for line in text.splitlines() if ALARMS.search(line)]
        assert not alarms, "\n".join(alarms)
        actor_alarms, killed = _actor_logs(ray_tmp)
        assert not actor_alarms, "\n".join(actor_alarms)
        assert not killed, "Ray killed child processes of exiting workers:\n" + "\n".join(killed)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # Progress without a terminal: lines, not a redrawn bar (until the dataset's report; training and eval
    # follow with transformers' own bars).
    assert "\r" not in proc.stderr.split("run report written")[0]
    assert re.search(r"^progress: 5 rows in \d+ s", proc.stderr, flags=re.MULTILINE), proc.stderr[-2000:]
    # The summary: a line per stage, the rejected caption with its reason, then the model and the eval.
    assert re.search(rf"^done: {re.escape(str(out))}$", proc.stdout, flags=re.MULTILINE), proc.stdout
    for stage in ("read", "ingest", "synth", "judge", "compose", "mix", "dedup"):
        assert re.search(rf"^  {stage} +in +\d+", proc.stdout, flags=re.MULTILINE), (stage, proc.stdout)
    assert re.search(r"^  ingest +in +5 +out +4 +rejected +1 +\(empty_caption 1\)$", proc.stdout,
                     flags=re.MULTILINE), proc.stdout
    assert re.search(rf"^  model +{re.escape(str(out / 'model'))}$", proc.stdout, flags=re.MULTILINE), proc.stdout
    assert re.search(r"^  eval +\S+report\.md$", proc.stdout, flags=re.MULTILINE), proc.stdout
