"""Answer composition: every branch of the pure functions, determinism, modes, and the stage's tally."""

from __future__ import annotations

import json

import pytest

from filters.compose import (
    COT_TEMPLATES,
    ComposeStage,
    compose_answer,
    compose_combined,
    is_concluding_sentence,
    last_sentence,
    normalize,
    states_conclusion,
    template_index,
)
from pipelines.config import RunConfig
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch


def test_normalize_drops_case_punctuation_articles():
    assert normalize("  The Left-Lung, an  Organ! ") == "left lung organ"


def test_last_sentence():
    assert last_sentence("One. Two is here! Three?") == "Three?"
    assert last_sentence("No terminal punctuation") == "No terminal punctuation"
    assert last_sentence("Dr. Smith said it. The end.") == "The end."
    assert last_sentence("   ") == ""


@pytest.mark.parametrize(
    ("informative", "precise", "expected"),
    [
        ("The mass is round. It lies in the left lung.", "Left lung", True),
        ("It lies in the left lung. The mass is round.", "Left lung", False),  # only the last sentence counts
        ("The stain is brownish.", "brown", False),  # whole words, not substrings
        ("There are 3 nodules.", "3", True),
        ("Anything.", "", False),
    ],
)
def test_states_conclusion(informative, precise, expected):
    assert states_conclusion(informative, precise) is expected


def test_is_concluding_sentence():
    assert is_concluding_sentence("The lesion is benign.")
    assert not is_concluding_sentence("Benign")
    assert not is_concluding_sentence("The lesion is benign")  # no sentence end
    assert not is_concluding_sentence("Yes.")


def test_combined_informative_alone_when_last_sentence_concludes():
    inf = "The cells have large nuclei. The stain is brown."
    assert compose_combined(inf, "Brown", "k") == (inf, "informative")


def test_combined_informative_plus_precise_when_precise_is_a_sentence():
    ans, form = compose_combined("The cells have large nuclei", "These cells are malignant.", "k")
    assert form == "informative_precise"
    assert ans == "The cells have large nuclei. These cells are malignant."


def test_combined_cot_otherwise():
    ans, form = compose_combined("The stain covers the cytoplasm.", "Brown.", "row1#0")
    assert form == "cot"
    expected = COT_TEMPLATES[template_index("row1#0")].format(
        informative="The stain covers the cytoplasm.", precise="Brown"
    )
    assert ans == expected
    assert ans.startswith("The stain covers the cytoplasm. ")
    assert ans.endswith("Brown.") and ".." not in ans


def test_combined_without_one_side():
    assert compose_combined("", "Brown", "k") == ("Brown", "precise")
    assert compose_combined("Some text.", "", "k") == ("Some text.", "informative")


def test_cot_phrasing_is_deterministic_per_key_and_varies_across_keys():
    a = [compose_combined("Info.", "x", f"id{i}#0")[0] for i in range(60)]
    b = [compose_combined("Info.", "x", f"id{i}#0")[0] for i in range(60)]
    assert a == b
    assert len(set(a)) == len(COT_TEMPLATES)  # 60 keys reach every phrasing


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("precise", ("Brown", "precise")),
        ("informative", ("The cytoplasm is dark.", "informative")),
    ],
)
def test_single_source_modes(mode, expected):
    assert compose_answer("The cytoplasm is dark.", "Brown", mode, "k") == expected


def test_unfiltered_composes_like_combined():
    args = ("The cytoplasm is dark.", "Brown", "k")
    assert compose_answer(*args[:2], "unfiltered", "k", "last_sentence") == compose_combined(*args)
    with pytest.raises(ValueError, match="unknown compose mode"):
        compose_answer("a", "b", "bogus", "k")


def _run(mode: str, tasks: list[dict], rid: str = "r1", rule: str = "last_sentence") -> dict:
    cfg = RunConfig.model_validate({"compose": {"mode": mode, "form_rule": rule}})
    row = empty_row(id=rid, caption="c", tasks=json.dumps(tasks))
    return batch_to_rows(ComposeStage(cfg.compose)(rows_to_batch([row])))[0]


def test_stage_composes_every_task_and_tallies():
    tasks = [
        {"instruction": "Color?", "informative": "The stain is brown.", "precise": "Brown", "label": "yes", "score": 0.9},
        {"instruction": "Count?", "informative": "I see two.", "precise": "3", "label": "yes", "score": 0.8},
    ]
    out = _run("combined", tasks)
    got = json.loads(out["tasks"])
    assert [t["answer_form"] for t in got] == ["informative", "cot"]
    assert got[1]["answer"].endswith("3.") and got[1]["score"] == 0.8
    assert json.loads(out["counts"])["compose"] == {"in": 2, "out": 2, "rejected": 0}


def test_stage_rejects_task_without_text_for_the_mode():
    tasks = [{"instruction": "Q?", "informative": "Only informative.", "precise": "", "label": "yes", "score": 0.7}]
    out = _run("precise", tasks)
    assert json.loads(out["tasks"]) == []
    (rej,) = json.loads(out["task_rejects"])
    assert (rej["stage"], rej["reason"], rej["informative"]) == ("compose", "empty_answer", "Only informative.")
    assert json.loads(out["counts"])["compose"] == {"in": 1, "out": 0, "rejected": 1}


def test_stage_skips_rejected_rows():
    cfg = RunConfig()
    row = empty_row(id="r", tasks=json.dumps([{"instruction": "q", "informative": "i", "precise": "p"}]))
    row.update(reject_stage="ingest", reject_reason="missing_image")
    out = batch_to_rows(ComposeStage(cfg.compose)(rows_to_batch([row])))[0]
    assert "answer" not in json.loads(out["tasks"])[0]
    assert "compose" not in json.loads(out["counts"])
