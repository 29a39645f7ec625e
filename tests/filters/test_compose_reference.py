"""Answer composition against the reference rule of bigai-ai/QA-Synthesizer, process/syn_utils.py
(`cook_classified_entry`): indicator words ('could be ', 'so ', 'thus ', 'therefore ', 'final ', 'answer ',
'result ') in the last ". "-separated piece of the lower-cased informative answer -> informative answer alone;
else an indicator anywhere in the lower-cased precise answer -> f"{informative} {precise}"; else chain of thought.
"""

from __future__ import annotations

import json

import pytest

from filters.compose import ComposeStage, compose_answer
from pipelines.config import RunConfig
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch


def reference_form(informative: str, precise: str) -> str:
    """The reference decision, re-implemented from syn_utils.py in a few lines."""
    indicators = ["could be ", "so ", "thus ", "therefore ", "final ", "answer ", "result "]
    last = informative.strip().lower().split(". ")[-1]
    if any(i in last for i in indicators):
        return "informative"
    if any(i in precise.lower() for i in indicators):
        return "informative_precise"
    return "cot"


CASES = [
    # (informative, precise, form worked out by hand from the rule)
    ("The stain fills the cytoplasm. So the cytoplasm is brown.", "Brown", "informative"),
    ("The stain fills the cytoplasm. THEREFORE it is brown", "Brown", "informative"),  # lower-cased first
    ("There are two nodules. The right lung is clear.", "The answer is 2", "informative_precise"),
    ("So we look closely. The stain is brown.", "Brown", "cot"),  # indicator only in an earlier sentence
    ("The mass also shows calcification.", "Calcified", "informative"),  # 'also ' contains 'so ' (reference quirk)
    ("It is the final result.", "Brown", "informative"),  # 'final ' matches ('result.' alone would not)
    ("That is the result.", "Brown", "cot"),  # 'result' is followed by '.', not by the space the list requires
    ("Is it brown? Thus it is.", "Brown", "informative"),  # only ". " splits sentences: one piece
    ("The lesion is round.", "It could be a cyst", "informative_precise"),
    ("The lesion is round.", "Cyst", "cot"),
]


def test_hand_worked_cases_agree_with_the_reference_reimplementation():
    for inf, prec, hand in CASES:
        assert reference_form(inf, prec) == hand, (inf, prec)


@pytest.mark.parametrize(("informative", "precise", "_hand"), CASES)
def test_default_rule_matches_reference(informative, precise, _hand):
    answer, form = compose_answer(informative, precise, "combined", "row#0")
    assert form == reference_form(informative, precise)
    if form == "informative":
        assert answer == informative.strip()
    elif form == "informative_precise":
        assert answer == f"{informative.strip()} {precise.strip()}"  # reference joins with one space
    else:
        assert answer.startswith(informative.strip().rstrip(".")) and precise.strip().rstrip(".") in answer


def test_last_sentence_rule_stays_available_and_differs():
    inf, prec = "The stain fills the cytoplasm. It is brown.", "Brown"
    assert compose_answer(inf, prec, "combined", "k", "last_sentence")[1] == "informative"
    assert compose_answer(inf, prec, "combined", "k")[1] == reference_form(inf, prec) == "cot"
    with pytest.raises(ValueError, match="form rule"):
        compose_answer(inf, prec, "combined", "k", "bogus")


def test_stage_uses_the_configured_rule():
    tasks = [{"instruction": "Color?", "informative": "The stain fills the cells. So it is brown.",
              "precise": "Brown", "label": "yes", "score": 0.9},
             {"instruction": "Color?", "informative": "The stain is brown.", "precise": "Brown", "label": "yes",
              "score": 0.9}]
    forms = {}
    for rule in ("indicator_words", "last_sentence"):
        cfg = RunConfig.model_validate({"compose": {"form_rule": rule}})
        row = empty_row(id="r", caption="c", tasks=json.dumps(tasks))
        out = batch_to_rows(ComposeStage(cfg.compose)(rows_to_batch([row])))[0]
        forms[rule] = [t["answer_form"] for t in json.loads(out["tasks"])]
    assert RunConfig().compose.form_rule == "indicator_words"
    assert forms["indicator_words"] == [reference_form(t["informative"], t["precise"]) for t in tasks] == [
        "informative", "cot"]
    assert forms["last_sentence"] == ["informative", "informative"]
