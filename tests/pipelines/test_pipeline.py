"""The dataset pipeline through Ray on CPU: nothing lost, resume after SIGKILL, Parquet readable."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.config import load_config
from pipelines.refs import resolve_run
from pipelines.pipeline import run_dataset

ROOT = Path(__file__).resolve().parents[2]


def _ids(out: Path, kind: str, row_level_only: bool = False) -> list[str]:
    m = json.loads((out / "manifest.json").read_text())
    ids = []
    for p in m["parts"][kind]:
        t = pq.read_table(out / p)
        for r in t.select(["id", "stage"] if kind == "rejects" else ["id"]).to_pylist():
            if row_level_only and r["stage"] not in ("read", "ingest", "dedup", "mix"):
                continue
            ids.append(r["id"])
    return ids


def test_bad_inputs_are_all_accounted_for(tmp_path, ray_local):
    from tests.badinputs import write_bad_json_input

    json_path, expected = write_bad_json_input(tmp_path / "in")
    cfg = load_config("biomed", "tiny", [f"input.path={json_path}", "stages=[ingest]", "rows_per_shard=4"])
    m = run_dataset(cfg, tmp_path / "out", progress=False)
    st = m.data["stages"]
    n_records = len(json.loads(Path(json_path).read_text()))
    assert st["read"]["in"] == n_records
    for name, c in st.items():
        assert c["in"] == c["out"] + c["rejected"], name
    rejects = [r for p in m.committed_parts("rejects") for r in pq.read_table(p).to_pylist()]
    data = [r for p in m.committed_parts("data") for r in pq.read_table(p, columns=["id", "source_id"]).to_pylist()]
    # every record is a dataset row or a row-level reject, exactly once
    assert len(data) + len(rejects) == n_records
    got = {r["source_id"]: r["reason"] for r in rejects} | {r["source_id"]: "accepted" for r in data}
    assert len(got) == n_records
    for key, reason in expected.items():
        matches = [v for k, v in got.items() if key in k]
        assert matches, f"no outcome for {key}"
        assert reason in matches, (key, reason, matches)


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipelines" / "run.py"), "--domain", "biomed", "--profile", "tiny",
            "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sink.before_commit:3", "sink.after_commit:2"])
def test_sigkill_while_writing_then_resume_gives_exactly_the_uninterrupted_ids(tmp_path, fault):
    """SIGKILL between writing parts and committing them, and right after a commit."""
    from pipelines.fixtures.sample_data import generate

    src = generate("biomed", tmp_path / "src", n=60, seed=5)
    common = ["--input", str(src), "--stages", "ingest", "rows_per_shard=10", "input.limit=60"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(full, *common), check=True, timeout=300, capture_output=True)
    proc = subprocess.run(_cli(killed, *common), timeout=300, capture_output=True,
                          env={**os.environ, "VLM_ADAPT_FAULT": fault})
    assert proc.returncode == -signal.SIGKILL
    partial = set(_ids(killed, "data"))
    assert 0 < len(partial) < len(set(_ids(full, "data")))
    leftovers = {p.name for p in (killed / "data").iterdir()} - {
        Path(p).name for p in json.loads((killed / "manifest.json").read_text())["parts"]["data"]}
    assert bool(leftovers) == fault.startswith("sink.before_commit"), leftovers  # an orphan part, not committed
    subprocess.run(_cli(killed, *common), check=True, timeout=300, capture_output=True)
    for kind in ("data", "rejects"):
        a, b = _ids(full, kind), _ids(killed, kind)
        assert len(b) == len(set(b)) or kind == "rejects", "duplicate ids after resume"
        assert sorted(a) == sorted(b), kind
    def counts(out):  # busy_s is timing, not a count
        st = json.loads((out / "manifest.json").read_text())["stages"]
        return {s: {k: v for k, v in c.items() if k != "busy_s"} for s, c in st.items()}

    assert counts(killed) == counts(full)


@pytest.mark.slow
def test_bad_inputs_through_the_whole_chain(tmp_path, ray_local):
    """Every bad-input case through ingest -> synth -> judge -> compose -> mix: input == output + rejects."""
    from tests.badinputs import write_bad_json_input

    json_path, expected = write_bad_json_input(tmp_path / "in")
    cfg = load_config("biomed", "tiny", [f"input.path={json_path}", "stages=[ingest, synth, judge, mix]",
                                         "synth.engine=transformers", "judge.engine=transformers",
                                         "synth.max_tokens=16", "rows_per_shard=5"])
    m = run_dataset(resolve_run(cfg), tmp_path / "out", progress=False)
    st = m.data["stages"]
    n_records = len(json.loads(Path(json_path).read_text()))
    for name in ("read", "ingest", "synth", "judge", "compose", "mix", "dedup"):
        assert name in st, name
        assert st[name]["in"] == st[name]["out"] + st[name]["rejected"], name
    accepted = sum(1 for v in expected.values() if v == "accepted")
    assert st["synth"]["in"] == st["ingest"]["out"] and st["mix"]["in"] == st["ingest"]["out"]
    data = [r for p in m.committed_parts("data") for r in pq.read_table(p, columns=["id", "source_id"]).to_pylist()]
    row_rejects = [r for p in m.committed_parts("rejects") for r in pq.read_table(p).to_pylist()
                   if r["stage"] in ("read", "ingest", "dedup", "mix")]
    assert len(data) == accepted
    assert len(data) + len(row_rejects) == n_records
    got = {r["source_id"]: r["reason"] for r in row_rejects} | {r["source_id"]: "accepted" for r in data}
    assert got == expected
