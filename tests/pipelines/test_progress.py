"""Progress on stderr (a bar on a terminal, lines otherwise) and the end-of-run summary with reject reasons."""

from __future__ import annotations

import json

from pipelines.app import summary
from pipelines.pipeline import Progress


def _row(synth_ok: bool, tokens: int) -> dict:
    counts = {"read": {"in": 1, "out": 1, "rejected": 0}, "ingest": {"in": 1, "out": 1, "rejected": 0},
              "synth": {"in": 1, "out": int(synth_ok), "rejected": int(not synth_ok)}}
    return {"counts": json.dumps(counts), "n_output_tokens": tokens}


def test_without_a_terminal_progress_is_lines_with_each_stage(capsys):
    p = Progress(True, tty=False, every_s=0)
    for ok in (True, False, True):
        p(_row(ok, 10))
    p.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("progress: ") for line in lines)
    assert lines[-1].startswith("progress: 3 rows in ")
    assert lines[-1].endswith("ingest 3/3  synth 2/3")  # out/in per stage over the rows seen; read left out


def test_on_a_terminal_one_bar_and_no_lines(capsys):
    p = Progress(True, tty=True)
    for _ in range(3):
        p(_row(True, 5))
    p.close()
    err = capsys.readouterr().err
    assert "progress:" not in err and "3row" in err.replace(" ", "")


def test_no_progress_prints_nothing(capsys):
    p = Progress(False, tty=False, every_s=0)
    p(_row(True, 1))
    p.close()
    assert capsys.readouterr().err == ""


def test_summary_line_per_stage_with_reject_reasons(tmp_path):
    manifest = {"stages": {
        "ingest": {"in": 5, "out": 3, "rejected": 2, "rejected_by_reason": {"empty_caption": 1, "missing_image": 1}},
        "read": {"in": 5, "out": 5, "rejected": 0},
    }}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    lines = summary(tmp_path).splitlines()
    assert lines[0] == f"done: {tmp_path}"
    assert lines[1] == "  read     in      5  out      5  rejected      0"
    assert lines[2] == "  ingest   in      5  out      3  rejected      2  (empty_caption 1, missing_image 1)"
