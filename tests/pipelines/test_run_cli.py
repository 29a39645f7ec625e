import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.run import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_documents_every_option():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, f"option {action.option_strings or action.dest} has no help"
    for flag in ("--domain", "--profile", "--input", "--image-root", "--out", "--stages", "--dry-run", "--push-to-hub"):
        assert flag in text


def test_help_runs_as_a_script():
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "run.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--push-to-hub" in proc.stdout


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--input", "/nonexistent/pairs.json"], "/nonexistent/pairs.json"),
        (["--input", "{tmp}/notjson.json"], "notjson.json"),
        (["--input", "{tmp}/empty.json"], "empty.json"),
        (["--input", "{tmp}/empty.json", "synth.max_tokn=3"], "synth.max_tokn"),
        (["--domain", "nosuchdomain", "--input", "{tmp}/empty.json"], "nosuchdomain"),
    ],
)
def test_bad_input_or_config_exits_2_with_one_line(tmp_path, capsys, argv, needle):
    (tmp_path / "notjson.json").write_text("{not json")
    (tmp_path / "empty.json").write_text("[]")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, capsys):
    code = main(["--domain", "biomed", "--profile", "tiny", "--dry-run", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    assert "IngestStage" in out and "SynthStage" in out and "tiny://vlm" in out
    assert not (tmp_path / "o").exists()


def test_dry_run_on_an_existing_run_counts_the_ids_already_written(tmp_path, capsys):
    from pipelines.manifest import Manifest
    from pipelines.core.rows import empty_row, rows_to_batch
    from pipelines.sinks import DatasetSink

    out = tmp_path / "o"
    args = ["--domain", "biomed", "--profile", "tiny", "--out", str(out)]
    from pipelines.run import build_parser, resolve

    cfg, _ = resolve(build_parser().parse_args(args))
    m = Manifest.open(out, cfg.hash(), {})
    sink = DatasetSink(out, m, domain="biomed", rows_per_shard=10)
    sink.add_batch(rows_to_batch([empty_row(id=f"r{i}", image=b"x", caption="c") for i in range(3)]))
    sink.close()
    assert main([*args, "--dry-run"]) == 0
    assert "(resuming: 3 ids already written)" in capsys.readouterr().out
