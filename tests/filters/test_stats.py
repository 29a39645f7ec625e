"""Filter statistics on a hand-made set: every number is counted by hand below."""

from __future__ import annotations

import json

import pytest

from filters.stats import TASK_TYPES, FilterStats, length_bin, score_bin, task_type


@pytest.mark.parametrize(
    ("instruction", "kind"),
    [
        ("What organ is shown?", "what"),
        ("Where is the lesion located?", "where"),
        ("How many cells are dividing?", "how many"),
        ("What is the number of nodules?", "how many"),
        ("Is the fracture displaced?", "yes-no"),
        ("Does the dish contain meat?", "yes-no"),
        ("Which side is affected?", "which"),
        ("Describe what you see in the image.", "describe"),
        ("Why is the tissue stained blue?", "why"),
        ("Based on the image, what is the diagnosis?", "what"),
        ("Name the ingredient on the left.", "other"),
    ],
)
def test_task_type(instruction, kind):
    assert task_type(instruction) == kind


def test_bins():
    assert [score_bin(s) for s in (0.0, 0.05, 0.1, 0.55, 0.999, 1.0)] == [0, 0, 1, 5, 9, 9]
    assert [length_bin(n) for n in (0, 1, 2, 3, 4, 7, 8, 300)] == [0, 1, 2, 2, 3, 3, 4, 9]


def _hand_made() -> list[dict]:
    row1 = {
        "tasks": json.dumps([
            {"instruction": "What organ is shown?", "precise": "Liver", "informative": "one two three four five",
             "answer": "one two three four five", "label": "yes", "score": 0.95},
            {"instruction": "How many cells?", "precise": "Two cells", "informative": "a b c",
             "answer": "a b c So the answer is Two cells.", "label": "yes", "score": 0.42},
        ]),
        "task_rejects": json.dumps([
            {"stage": "judge", "reason": "judge_no", "instruction": "Is it red?", "precise": "Yes",
             "informative": "It is blue.", "label": "no", "score": 0.7},
            {"stage": "synth", "reason": "unparseable", "text": "garbage"},
        ]),
    }
    # Already-decoded lists (as the sink has them), an unjudged kept task (unfiltered mode, too long).
    row2 = {
        "tasks": [{"instruction": "Describe the image.", "precise": "x", "informative": "", "answer": "x",
                   "label": "", "score": None}],
        "task_rejects": [{"stage": "judge", "reason": "judge_open", "instruction": "Why is it here?",
                          "label": "open", "score": 1.0}],
    }
    return [row1, row2]


def test_stats_on_hand_made_rows():
    st = FilterStats()
    for r in _hand_made():
        st.add_row(r)
    d = st.as_dict()
    assert d["rows"] == 2
    assert d["labels"] == {"yes": 2, "no": 1, "open": 1}
    assert d["kept_labels"] == {"unjudged": 1, "yes": 2}
    assert d["task_reject_reasons"] == {"judge/judge_no": 1, "judge/judge_open": 1, "synth/unparseable": 1}
    hist = [0] * 10
    hist[9], hist[4], hist[7] = 2, 1, 1  # 0.95 and 1.0; 0.42; 0.7
    assert d["score_histogram"]["counts"] == hist
    assert d["score_histogram"]["edges"][0] == 0.0 and d["score_histogram"]["edges"][-1] == 1.0
    kept = {t: 0 for t in TASK_TYPES} | {"what": 1, "how many": 1, "describe": 1}
    rejected = {t: 0 for t in TASK_TYPES} | {"yes-no": 1, "why": 1}
    assert d["task_types"] == {"kept": kept, "rejected": rejected}
    words = d["answer_words"]
    # precise: "Liver"=1 -> bin 1, "Two cells"=2 -> bin 2, "x"=1 -> bin 1
    assert words["precise"]["counts"] == [0, 2, 1, 0, 0, 0, 0, 0, 0, 0]
    # informative: 5 words -> bin 3 (4-7), 3 words -> bin 2 (2-3), "" not counted
    assert words["informative"]["counts"] == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    # answer: 5 -> bin 3, 8 -> bin 4 (8-15), 1 -> bin 1
    assert words["answer"]["counts"] == [0, 1, 0, 1, 1, 0, 0, 0, 0, 0]
    assert words["answer"]["bins"][4] == "8-15"
    json.dumps(d)  # the manifest stores it as JSON


def test_merge_equals_single_accumulator():
    a, b, both = FilterStats(), FilterStats(), FilterStats()
    r1, r2 = _hand_made()
    a.add_row(r1)
    b.add_row(r2)
    both.add_row(r1)
    both.add_row(r2)
    assert a.merge(b).as_dict() == both.as_dict()
    assert FilterStats().as_dict()["labels"] == {"yes": 0, "no": 0, "open": 0}
