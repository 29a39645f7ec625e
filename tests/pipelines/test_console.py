"""A successful run's console: progress, the summary, the real warnings, and nothing that looks like an error.

Runs the tiny pipeline (ingest, synth, judge, mix with vLLM engines in Ray actors) as a newcomer would,
output not on a terminal, and reads everything it printed on stdout and stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


def test_successful_tiny_run_prints_progress_summary_and_no_alarms(tmp_path):
    images = _input(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "run.py"), "--domain", "biomed", "--profile", "tiny",
         "--input", str(tmp_path / "pairs.json"), "--image-root", str(images), "--out", str(out),
         "--stages", "ingest,synth,judge,mix"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    alarms = [line for line in text.splitlines() if ALARMS.search(line)]
    assert not alarms, "\n".join(alarms)
    # Progress without a terminal: lines, not a redrawn bar.
    assert "\r" not in proc.stderr
    assert re.search(r"^progress: 5 rows in \d+ s", proc.stderr, flags=re.MULTILINE), proc.stderr[-2000:]
    # The summary: a line per stage, the rejected caption with its reason.
    assert re.search(rf"^done: {re.escape(str(out))}$", proc.stdout, flags=re.MULTILINE), proc.stdout
    for stage in ("read", "ingest", "synth", "judge", "compose", "mix", "dedup"):
        assert re.search(rf"^  {stage} +in +\d+", proc.stdout, flags=re.MULTILINE), (stage, proc.stdout)
    assert re.search(r"^  ingest +in +5 +out +4 +rejected +1 +\(empty_caption 1\)$", proc.stdout,
                     flags=re.MULTILINE), proc.stdout
