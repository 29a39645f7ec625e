"""Metrics: analytic values, the token traps, option parsing, and properties."""

from __future__ import annotations

import string
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.eval import metrics as M

WORD = st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=8).filter(
    lambda w: w not in M.ARTICLES and w not in ("yes", "no", "answer", "option", "choice", "is")
)


def test_normalize_drops_case_punctuation_articles():
    assert M.normalize("The  Left Lung, an   apex!") == "left lung apex"
    assert M.tokens("A nodule.") == ["nodule"]


def test_token_recall_values():
    assert M.token_recall("The lungs.", "lungs") == 1.0
    assert M.token_recall("left side", "left lung") == 0.5
    assert M.token_recall("", "liver") == 0.0
    assert M.token_recall("lung", "lung lung") == 0.5  # multiset: one of two
    with pytest.raises(ValueError):
        M.token_recall("anything", "the ...")


@given(st.lists(WORD, min_size=1, max_size=6), st.lists(WORD, max_size=6), st.lists(WORD, max_size=4))
def test_token_recall_properties(answer, pred, extra):
    a, p = " ".join(answer), " ".join(pred)
    r = M.token_recall(p, a)
    assert 0.0 <= r <= 1.0
    assert M.token_recall(a, a) == 1.0
    assert M.token_recall(p + " " + " ".join(extra), a) >= r  # more words never lower recall


@pytest.mark.parametrize(
    ("text", "polarity"),
    [
        ("a nodule is present", None),  # contains the letters n-o, not the token "no"
        ("No, there is none", "no"),
        ("Yes.", "yes"),
        ("yes, no doubt", "yes"),
        ("I don't know", None),
        ("NO", "no"),
        ("nothing abnormal", None),
    ],
)
def test_yes_no_reads_tokens(text, polarity):
    assert M.yes_no(text) == polarity


def test_closed_correct():
    assert not M.closed_correct("a nodule is present", "No")
    assert M.closed_correct("No, there is none", "no")
    assert M.closed_correct("Yes", "yes")
    assert not M.closed_correct("Yes", "No")
    assert M.closed_correct("the left lung", "left")  # non-yes/no closed: contiguous tokens
    assert not M.closed_correct("the right lung", "left")
    assert not M.closed_correct("lung left", "left lung")


OPTS = ["MRI", "CT scan", "X-ray", "ultrasound"]


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("B", 1), ("(B)", 1), ("B.", 1), ("b", 1), ("The answer is B", 1), ("Answer: b", 1),
        ("The answer is (C).", 2), ("option D", 3), ("B. CT scan", 1), ("C: X-ray", 2),
        ("CT scan", 1), ("It looks like an ultrasound image", 3),
        ("A CT scan", 1),  # "A" is an article here, not option A
        ("E", None),  # no option E among four
        ("MRI or CT scan", None),  # two options named: ambiguous, never a guess
        ("zebra", None), ("", None),
    ],
)
def test_parse_choice(text, index):
    assert M.parse_choice(text, OPTS) == index


def test_parse_choice_prefers_longest_option_text():
    assert M.parse_choice("a CT scan was done", ["CT", "CT scan", "MRI"]) == 1
    assert M.parse_choice("CT", ["CT", "CT scan", "MRI"]) == 0


@settings(max_examples=60)
@given(st.lists(WORD, min_size=2, max_size=5, unique=True), st.data())
def test_parse_choice_roundtrip(options, data):
    i = data.draw(st.integers(0, len(options) - 1))
    letter = M.LETTERS[i]
    for form in (letter, f"({letter})", f"{letter}.", f"The answer is {letter}", f"Answer: {letter.lower()}",
                 options[i], f"{letter}. {options[i]}"):
        assert M.parse_choice(form, options) == i, form


def test_gold_choice():
    assert M.gold_choice("c", OPTS) == 2
    assert M.gold_choice("ct scan", OPTS) == 1
    with pytest.raises(ValueError):
        M.gold_choice("PET", OPTS)


def test_rouge_l_values():
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    assert M.rouge_l("abc def", "abc def") == 1.0
    assert M.rouge_l("abc", "xyz") == 0.0
    assert M.rouge_l("", "xyz") == 0.0
    # P = 2/2, R = 2/4 -> F1 = 2/3; beta 1.2 weights recall: (1+1.44)*1*0.5/(0.5+1.44*1)
    assert M.rouge_l("pasta salt", "boil pasta add salt") == pytest.approx(2 / 3)
    assert M.rouge_l("pasta salt", "boil pasta add salt", beta=1.2) == pytest.approx(2.44 * 0.5 / 1.94)


def _lcs_reference(a: tuple, b: tuple) -> int:
    @cache
    def f(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return 0
        return f(i + 1, j + 1) + 1 if a[i] == b[j] else max(f(i + 1, j), f(i, j + 1))

    return f(0, 0)


@given(st.lists(st.sampled_from("abcd"), max_size=9), st.lists(st.sampled_from("abcd"), max_size=9))
def test_lcs_matches_recursive_definition(a, b):
    assert M._lcs(a, b) == _lcs_reference(tuple(a), tuple(b))
    assert M.rouge_l(" ".join(a), " ".join(b)) == pytest.approx(M.rouge_l(" ".join(b), " ".join(a)))


def test_split_items_and_set_recall():
    assert M.split_items("Rice, black beans and corn.") == ["rice", "black beans", "corn"]
    assert M.set_recall("rice, black beans and corn", ["rice", "beans", "kale"]) == pytest.approx(2 / 3)
    assert M.set_recall("some olive oil", ["olive oil"]) == 1.0
    assert M.set_recall("oil", ["olive oil"]) == 0.0
    with pytest.raises(ValueError):
        M.set_recall("x", [])


def test_multilabel_f1():
    assert M.multilabel_f1(["a b", "c"], ["c", "d"]) == 0.5
    assert M.multilabel_f1([], []) == 1.0
    assert M.multilabel_f1(["x"], []) == 0.0
    assert M.multilabel_f1(["Rice", "rice."], ["rice"]) == 1.0


def test_accuracy_and_macro_f1():
    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "b", "b", None]
    assert M.accuracy(y_true, y_pred) == 0.5
    # a: tp1 fp0 fn1 -> 2/3; b: tp1 fp1 fn1 -> 1/2
    assert M.macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # a predicted class never true still counts (F1 0), as in sklearn
    assert M.macro_f1(["a", "a"], ["a", "c"]) == pytest.approx((2 / 3 + 0) / 2)
    assert M.macro_f1(["a"], ["a"], labels=["a", "b"]) == 0.5
    with pytest.raises(ValueError):
        M.accuracy([], [])


def test_aggregate_mixed_and_unparsed():
    recs = [
        {"answer_type": "open", "answer": "left lung", "prediction": "the left side"},
        {"answer_type": "closed", "answer": "No", "prediction": "a nodule is present"},
        {"answer_type": "closed", "answer": "Yes", "prediction": "Yes it is"},
        {"answer_type": "closed", "answer": "Yes", "prediction": None},  # rejected: wrong, counted
    ]
    out = M.aggregate(recs)
    assert out["metrics"] == {"open_recall": 0.5, "closed_accuracy": pytest.approx(1 / 3)}  # 1 of 3 closed
    assert out["n"] == 4 and out["n_rejected"] == 1 and out["counts"] == {"open": 1, "closed": 3}

    mc = [
        {"answer_type": "choice", "answer": "B", "choices": OPTS, "prediction": "The answer is B"},
        {"answer_type": "choice", "answer": "A", "choices": OPTS, "prediction": "no idea"},
        {"answer_type": "choice", "answer": "A", "choices": OPTS, "prediction": "C"},
    ]
    out = M.aggregate(mc)
    assert out["metrics"] == {"accuracy": pytest.approx(1 / 3), "unparsed": 1}


def test_aggregate_classification_and_bad_type():
    labels = ["adipose", "mucus", "tumor"]
    recs = [
        {"answer_type": "classification", "answer": "tumor", "choices": labels, "prediction": "tumor"},
        {"answer_type": "classification", "answer": "mucus", "choices": labels, "prediction": "C"},
    ]
    out = M.aggregate(recs)["metrics"]
    assert out["accuracy"] == 0.5 and out["unparsed"] == 0
    # over the 3 labels: tumor tp1 fp1 -> 2/3; mucus fn1 -> 0; adipose 0
    assert out["macro_f1"] == pytest.approx((2 / 3) / 3)
    with pytest.raises(ValueError, match="answer_type"):
        M.aggregate([{"answer_type": "essay", "answer": "x", "prediction": "x"}])
