"""Mixing: record format, strategies, caption position, the image part once, general data sampling."""

from __future__ import annotations

import json

import pytest

from filters.mix import MixStage, NoSyntheticTask, build_records, caption_first, load_general_records
from pipelines.core.contract import DEFAULT_CAPTION_PROMPT, caption_record
from pipelines.core.contract import messages as turns_to_messages
from pipelines.config import RunConfig
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch

TASKS = [
    {"instruction": "What color?", "precise": "Brown", "informative": "It is brown.", "label": "yes",
     "score": 0.9, "answer": "It is brown.", "answer_form": "informative"},
    {"instruction": "How many?", "precise": "2", "informative": "I count two.", "label": "yes",
     "score": 0.6, "answer": "I count two. So the answer is 2.", "answer_form": "cot"},
]


def _row(rid="r1", tasks=TASKS, user_prompt="<image>\nWhat is shown?"):
    return empty_row(id=rid, caption="A slide.", user_prompt=user_prompt, tasks=json.dumps(tasks))


def _texts(record):
    return [(m["role"], [p.get("text") for p in m["content"] if p["type"] == "text"][0]) for m in record["messages"]]


def _image_parts(record):
    return [(i, m["role"]) for i, m in enumerate(record["messages"]) for p in m["content"] if p["type"] == "image"]


def test_messages_format_and_single_image_part():
    msgs = turns_to_messages([("q1", "a1"), ("q2", "a2")])
    assert msgs[0] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q1"}]}
    assert msgs[1] == {"role": "assistant", "content": [{"type": "text", "text": "a1"}]}
    assert msgs[2] == {"role": "user", "content": [{"type": "text", "text": "q2"}]}
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 2


def test_caption_record():
    rec = caption_record(_row())
    assert rec == {
        "split": "train",
        "messages": turns_to_messages([("What is shown?", "A slide.")]),
        "task_kind": "caption",
        "n_synthetic": 0,
        "judge_scores": [],
    }
    assert _texts(caption_record(_row(user_prompt="")))[0] == ("user", DEFAULT_CAPTION_PROMPT)


@pytest.mark.parametrize(("position", "first"), [("first", True), ("last", False)])
def test_single_stage_caption_position(position, first):
    (rec,) = build_records(_row(), "single_stage", position)
    texts = _texts(rec)
    assert rec["task_kind"] == "mixed" and rec["n_synthetic"] == 2 and rec["judge_scores"] == [0.9, 0.6]
    assert len(texts) == 6
    cap = [("user", "What is shown?"), ("assistant", "A slide.")]
    syn = [("user", "What color?"), ("assistant", "It is brown."),
           ("user", "How many?"), ("assistant", "I count two. So the answer is 2.")]
    assert texts == (cap + syn if first else syn + cap)
    assert _image_parts(rec) == [(0, "user")]


def test_random_caption_position_is_seeded_by_id_and_seed():
    ids = [f"id{i}" for i in range(40)]
    a = [caption_first(i, 0, "random") for i in ids]
    assert a == [caption_first(i, 0, "random") for i in ids]
    assert 5 < sum(a) < 35  # both positions occur
    assert a != [caption_first(i, 1, "random") for i in ids]
    for rid in ids[:10]:
        (rec,) = build_records(_row(rid), "single_stage", "random", seed=0)
        assert (_texts(rec)[0][1] == "What is shown?") == caption_first(rid, 0, "random")
        assert _image_parts(rec) == [(0, "user")]


def test_single_stage_without_synthetic_is_the_caption_record():
    assert build_records(_row(tasks=[]), "single_stage") == [caption_record(_row(tasks=[]))]


def test_synthetic_only():
    (rec,) = build_records(_row(), "synthetic_only")
    assert rec["task_kind"] == "synthetic" and rec["n_synthetic"] == 2
    assert "A slide." not in [t for _, t in _texts(rec)]
    assert _image_parts(rec) == [(0, "user")]
    with pytest.raises(NoSyntheticTask):
        build_records(_row(tasks=[]), "synthetic_only")


def test_caption_only_ignores_tasks():
    assert build_records(_row(), "caption_only") == [caption_record(_row())]


def test_two_stage():
    stage1, stage2 = build_records(_row(), "two_stage")
    assert (stage1["split"], stage1["task_kind"], len(stage1["messages"])) == ("stage1", "caption", 2)
    assert (stage2["split"], stage2["task_kind"], stage2["n_synthetic"]) == ("stage2", "synthetic", 2)
    assert _image_parts(stage1) == [(0, "user")] and _image_parts(stage2) == [(0, "user")]
    assert [r["split"] for r in build_records(_row(tasks=[]), "two_stage")] == ["stage1"]


def test_uncomposed_task_gets_combined_answer():
    task = {"instruction": "Color?", "informative": "The stain covers it.", "precise": "Brown"}
    (rec,) = build_records(_row(tasks=[task]), "synthetic_only")
    assert _texts(rec)[1][1].startswith("The stain covers it.") and _texts(rec)[1][1].endswith("Brown.")


def _stage(strategy, rows):
    cfg = RunConfig.model_validate({"mix": {"strategy": strategy, "caption_position": "first"}})
    return batch_to_rows(MixStage(cfg.mix)(rows_to_batch(rows)))


def test_stage_records_and_row_tally():
    out = _stage("single_stage", [_row("a"), _row("b", tasks=[])])
    assert [json.loads(r["records"])[0]["task_kind"] for r in out] == ["mixed", "caption"]
    assert all(json.loads(r["counts"])["mix"] == {"in": 1, "out": 1, "rejected": 0} for r in out)


def test_stage_synthetic_only_rejects_image_without_task():
    ok, bad = _stage("synthetic_only", [_row("a"), _row("b", tasks=[])])
    assert ok["reject_stage"] == "" and json.loads(ok["records"])[0]["n_synthetic"] == 2
    assert (bad["reject_stage"], bad["reject_reason"]) == ("mix", "no_synthetic_task")
    assert bad["records"] == "[]"
    assert json.loads(bad["counts"])["mix"] == {"in": 1, "out": 0, "rejected": 1}


def test_stage_records_unusable_task_instead_of_dropping_it():
    tasks = [*TASKS, {"instruction": "", "precise": "x", "informative": "y", "answer": "y", "label": "yes"}]
    (out,) = _stage("single_stage", [_row("a", tasks=tasks)])
    assert json.loads(out["records"])[0]["n_synthetic"] == 2
    (rej,) = json.loads(out["task_rejects"])
    assert (rej["stage"], rej["reason"], rej["precise"]) == ("mix", "empty_task", "x")


def test_stage_leaves_rejected_rows_alone():
    row = _row("a")
    row.update(reject_stage="ingest", reject_reason="unreadable_image")
    (out,) = _stage("single_stage", [row])
    assert out["records"] == "[]" and "mix" not in json.loads(out["counts"])


# -- general data -------------------------------------------------------------------------------


@pytest.fixture
def general_dir(tmp_path):
    (tmp_path / "img").mkdir()
    items = []
    for i in range(10):
        (tmp_path / "img" / f"{i}.png").write_bytes(f"png{i}".encode())
        items.append({
            "image": f"img/{i}.png",
            "conversations": [
                {"from": "human", "value": f"<image>\nQuestion {i}?"},
                {"from": "gpt", "value": f"Answer {i}."},
                {"from": "human", "value": "More?"},
                {"from": "gpt", "value": "No."},
            ],
        })
    items.append({"images": ["img/0.png"], "messages": [{"role": "user", "content": "<image>Q sharegpt"},
                                                         {"role": "assistant", "content": "A sharegpt"}]})
    (tmp_path / "general.json").write_text(json.dumps(items))
    return tmp_path


def test_load_general_records_samples_fraction(general_dir):
    recs = load_general_records(str(general_dir / "general.json"), 0.5, 8, seed=3)
    assert len(recs) == 4
    for r in recs:
        assert r["task_kind"] == "general" and r["split"] == "train" and r["n_synthetic"] == 0
        assert len(r["images"]) == 1 and r["images"][0].startswith(b"png")
        assert _image_parts(r) == [(0, "user")]
        assert "<image>" not in json.dumps(r["messages"])
    first = [_texts(r)[0][1] for r in recs]
    assert first == [_texts(r)[0][1] for r in load_general_records(str(general_dir), 0.5, 8, seed=3)]
    assert first != [_texts(r)[0][1] for r in load_general_records(str(general_dir), 0.5, 8, seed=4)]


def test_load_general_records_both_formats_and_shortfall(general_dir):
    recs = load_general_records(str(general_dir / "general.json"), 1.0, 50, seed=0)
    assert len(recs) == 11  # all there is
    texts = {_texts(r)[0][1] for r in recs}
    assert {"Question 0?", "Q sharegpt"} <= texts
    q0 = next(r for r in recs if _texts(r)[0][1] == "Question 0?")
    assert len(q0["messages"]) == 4 and q0["images"] == [b"png0"]
    assert load_general_records(str(general_dir), 0.0, 50, seed=0) == []


def test_load_general_records_fails_loudly_on_missing_image(general_dir):
    (general_dir / "img" / "3.png").unlink()
    with pytest.raises(FileNotFoundError):
        load_general_records(str(general_dir / "general.json"), 1.0, 11, seed=0)
