import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.manifest import Manifest, ResumeMismatchError
from pipelines.core.rows import add_count, add_task_rejects, count_row_stage, empty_row, reject, rows_to_batch
from pipelines.sinks import DatasetSink


def _png(color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def _rows():
    rows = []
    for i in range(5):
        r = empty_row(id=f"r{i}", source_id=f"in.json#{i}", image=_png(), caption=f"caption {i}",
                      user_prompt="Describe the image.")
        count_row_stage(r, "read")
        rows.append(r)
    reject(rows[1], "ingest", "missing_image", "images/x.png not found")
    for r in rows:
        count_row_stage(r, "ingest")
    # a task-level reject on an accepted row
    add_task_rejects(rows[2], [{"stage": "judge", "reason": "judge_no", "instruction": "q?", "precise": "a",
                                "informative": "b", "label": "no", "score": 0.7}])
    add_count(rows[2], "judge", n_in=1, n_out=0, n_rejected=1)
    rows.append(dict(rows[3], source_id="in.json#5"))  # same id as r3: a duplicate
    return rows


def _open(tmp_path, resume=True, h="h1"):
    return Manifest.open(tmp_path, h, {"domain": "biomed"}, resume=resume)


def test_sink_splits_counts_and_writes_loadable_parquet(tmp_path):
    m = _open(tmp_path)
    sink = DatasetSink(tmp_path, m, domain="biomed", rows_per_shard=3)
    rows = _rows()
    sink.add_batch(rows_to_batch(rows[:3]))
    sink.add_batch(rows_to_batch(rows[3:]))
    sink.close()
    st = m.data["stages"]
    assert st["read"] == {"in": 6, "out": 6, "rejected": 0}
    assert st["ingest"]["in"] == 6 and st["ingest"]["rejected"] == 1
    assert st["ingest"]["rejected_by_reason"] == {"missing_image": 1}
    assert st["dedup"] == {"in": 5, "out": 4, "rejected": 1, "rejected_by_reason": {"duplicate_id": 1}}
    assert st["judge"]["rejected"] == 1
    assert m.check_balanced() == []
    data_ids = sorted(i for p in m.committed_parts("data") for i in pq.read_table(p).column("id").to_pylist())
    assert data_ids == ["r0", "r2", "r3", "r4"]
    rejects = [r for p in m.committed_parts("rejects") for r in pq.read_table(p).to_pylist()]
    assert sorted((r["id"], r["stage"], r["reason"]) for r in rejects) == [
        ("r1", "ingest", "missing_image"), ("r2", "judge", "judge_no"), ("r3", "dedup", "duplicate_id")]
    # every input row is either in data or a row-level reject: nothing vanished
    row_level = {r["id"] for r in rejects if r["stage"] in ("ingest", "dedup")}
    assert {r["id"] for r in rows} <= set(data_ids) | row_level
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["parts"] == m.data["parts"] and saved["config_hash"] == "h1"

    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=[str(p) for p in m.committed_parts("data")], split="train")
    ex = ds[0]
    assert isinstance(ex["images"][0], Image.Image)
    assert ex["messages"][0]["role"] == "user"
    assert [c["type"] for c in ex["messages"][0]["content"]] == ["image", "text"]
    assert ex["messages"][1]["content"][0]["text"].startswith("caption")


def test_resume_reads_committed_ids_and_removes_orphans(tmp_path):
    m = _open(tmp_path)
    sink = DatasetSink(tmp_path, m, domain="biomed", rows_per_shard=100)
    sink.add_batch(rows_to_batch(_rows()))
    sink.close()
    orphan = tmp_path / "data" / "train-99999-dead.parquet"
    orphan.write_bytes(b"partial")
    m2 = _open(tmp_path)
    assert not orphan.exists()
    assert m2.committed_ids() == {"r0", "r1", "r2", "r3", "r4"}
    assert m2.data["stages"] == m.data["stages"]
    with pytest.raises(ResumeMismatchError, match="config hash"):
        _open(tmp_path, h="other")


def test_counts_that_do_not_balance_raise():
    r = empty_row(id="x")
    with pytest.raises(AssertionError, match="in=2"):
        add_count(r, "synth", n_in=2, n_out=1, n_rejected=0)


def test_task_reject_needs_stage_and_reason():
    r = empty_row(id="x")
    with pytest.raises(ValueError):
        add_task_rejects(r, [{"stage": "judge"}])
    with pytest.raises(KeyError):
        add_task_rejects(r, [{"stage": "judge", "reason": "x", "bogus": 1}])
