"""Evaluation scores against their references.

Reference-compatible scores follow bigai-ai/QA-Synthesizer vllm_inference/utils/task.py (`VQA_RAD.evaluate`,
`PMC_VQA.evaluate_entry`), utils/metric.py (`parse_multi_choice_response`, from MMMU eval_utils.py) and
utils/llava_med/{glossary,evaluate_metrics}.py (copies of LLaVA-Med v1.0.0 llava/eval/eval_metrics/). The
reference functions are re-implemented below in a few lines each; expected values are also worked by hand.
"""

from __future__ import annotations

import random
import re

import pytest

from posttrain.eval import metrics as M
from posttrain.eval import reference_metrics as R
from posttrain.eval.report import build_table
from posttrain.eval.runner import score

# -- compact re-implementations of the reference code ----------------------------------------------

PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
NUM = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
       "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def ref_normalize_word(token):  # glossary.py normalize_word (contractions left out: no test input has one)
    t = token
    for p in PUNCT:
        t = t.replace(p, "") if (p + " " in token or " " + p in token or re.search(r"(\d)(\,)(\d)", token)) \
            else t.replace(p, " ")
    t = re.compile(r"(?!<=\d)(\.)(?!\d)").sub("", t, 32)
    return " ".join(NUM.get(w, w) for w in t.lower().split() if NUM.get(w, w) not in ("a", "an", "the")).replace(",", "")


def ref_recall(pred, gold):  # task.py VQA_RAD OPEN: calculate_f1score(normalize(pred), normalize(gold))[2]
    c = ref_normalize_word(ref_normalize_word(pred.lower())).split()
    r = ref_normalize_word(ref_normalize_word(gold.lower())).split()
    if not c or not r:
        return 0
    tp = sum(c.count(w) for w in set(c) if w in r)
    fn = sum(r.count(w) for w in set(r) if w not in c)
    return tp / (tp + fn) if tp else 0


def ref_closed(pred, gold):  # task.py VQA_RAD CLOSED
    p, g = ref_normalize_word(pred.lower()), ref_normalize_word(gold.lower())
    return int(("yes" in p or "no" in p) and g in p)


def ref_parse(resp, choices, index2ans, seed):  # metric.py parse_multi_choice_response
    for ch in [",", ".", "!", "?", ";", ":", "'"]:
        resp = resp.strip(ch)
    resp = f" {resp} "
    cands = [c for c in choices if f"({c})" in resp]
    br, by_idx = bool(cands), True
    cands = cands or [c for c in choices if f" {c} " in resp]
    if not cands and len(resp) > 5:
        cands = [i for i, a in index2ans.items() if a.lower() in resp.lower()]
        by_idx = not cands
    if not cands:
        return random.Random(seed).choice(choices)
    pos = [resp.rfind(f"({c})" if br else f" {c} ") if by_idx else resp.lower().rfind(index2ans[c].lower())
           for c in cands]
    return cands[pos.index(max(pos))]


OPTS = ["MRI", "CT scan", "X-ray", "ultrasound"]
IDX = dict(zip("ABCD", OPTS, strict=True))

# -- reference-compatible scores -----------------------------------------------------------------


@pytest.mark.parametrize(("pred", "gold", "hand"), [
    ("left left", "left lung", 2 / 3),  # true positives count the prediction's words (reference quirk)
    ("There are two nodules.", "2 nodules", 1.0),  # number words and the final period normalised
    ("The liver, (right lobe)", "right-lobe", 1.0),  # "-" -> space, brackets and ", " dropped
    ("", "liver", 0.0),
    ("spleen", "liver", 0.0),
])
def test_llava_med_recall(pred, gold, hand):
    assert ref_recall(pred, gold) == pytest.approx(hand)
    assert R.llava_med_recall(pred, gold) == pytest.approx(hand)


@pytest.mark.parametrize(("pred", "gold", "hand"), [
    ("a nodule is present", "no", 1.0),  # the reference's substring bug: "no" inside "nodule"
    ("Yes, there is a mass.", "yes", 1.0),
    ("No.", "yes", 0.0),
    ("left", "left", 0.0),  # a closed answer without 'yes'/'no' never scores in the reference
])
def test_reference_closed_keeps_the_reference_substring_rule(pred, gold, hand):
    assert ref_closed(pred, gold) == hand
    assert R.reference_closed(pred, gold) == hand


def test_normalize_word_matches_reference_on_mixed_punctuation():
    for text in ("Right-lower lobe; (RLL).", "1,000 cells", "T2 weighted, MRI!", "The answer is 3.5 cm.",
                 "x / y", "none of them"):
        assert R.normalize_word(text) == ref_normalize_word(text), text


@pytest.mark.parametrize(("resp", "seed", "hand"), [
    ("The answer is (B) CT scan", 0, "B"),
    ("I think A and C", 0, "C"),  # several letters: the last one mentioned
    ("(A) or maybe (D).", 0, "D"),
    ("It is an ultrasound image", 0, "D"),  # option text
    ("An MRI, not a CT scan", 0, "B"),  # several option texts: the last one mentioned
    ("nothing useful", 7, None),  # seeded random fallback (worked out by the re-implementation)
])
def test_mmmu_choice_parser(resp, seed, hand):
    expected = ref_parse(resp, list("ABCD"), IDX, seed)
    if hand is not None:
        assert expected == hand
    got, guessed = R.mmmu_choice(resp, list("ABCD"), IDX, seed)
    assert got == expected and guessed == (hand is None)


def test_score_reports_reference_metrics_beside_the_fixed_ones():
    refs = [
        {"id": "o1", "answer_type": "open", "answer": "left lung", "choices": []},
        {"id": "c1", "answer_type": "closed", "answer": "no", "choices": []},
        {"id": "c2", "answer_type": "closed", "answer": "yes", "choices": []},
    ]
    preds = [{"id": "o1", "prediction": "left left"}, {"id": "c1", "prediction": "a nodule is present"},
             {"id": "c2", "prediction": "Yes\u2014there is a mass"}]
    res = score("slake", preds, refs)
    assert res["metrics"] == {"open_recall": 0.5, "closed_accuracy": 0.5}  # fixed: token recall, token polarity
    assert res["reference_metrics"] == pytest.approx({
        "open_recall": ref_recall("left left", "left lung"),
        "closed_accuracy": (ref_closed("a nodule is present", "no") + ref_closed("Yes\u2014there is a mass", "yes")) / 2,
    })
    _, table = build_table({"m": [res]})
    assert ("slake", "closed_accuracy (reference-compatible)", [1.0]) in table


def test_choice_reference_accuracy_uses_position_seeds():
    refs = [{"id": f"q{i}", "answer_type": "choice", "answer": a, "choices": OPTS} for i, a in enumerate("ABCD")]
    texts = ["(A)", "I think A and C", "zzzzzz", "ultrasound"]
    res = score("pmc_vqa", [{"id": f"q{i}", "prediction": t} for i, t in enumerate(texts)], refs)
    expected = sum(ref_parse(t, list("ABCD"), IDX, i) == a for i, (t, a) in enumerate(zip(texts, "ABCD", strict=True)))
    assert res["reference_metrics"]["accuracy"] == pytest.approx(expected / 4)


# -- the project's fixed scores --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "polarity"), [
    ("Yes\u2014the lesion is present", "yes"),  # em-dash
    ("\u201cNo\u201d, there is none", "no"),  # curly double quotes
    ("\u2018yes\u2019", "yes"),  # curly single quotes
    ("No\u2013not seen", "no"),  # en-dash
])
def test_yes_no_with_unicode_punctuation(text, polarity):
    assert M.yes_no(text) == polarity
    assert M.closed_correct(text, polarity) and not M.closed_correct(text, "no" if polarity == "yes" else "yes")


def test_open_recall_reads_number_words_as_digits():
    """LLaVA-Med glossary.py manual_map: none/zero..ten -> digits."""
    assert M.token_recall("There are two nodules", "2") == 1.0
    assert M.token_recall("three", "3 lesions") == 0.5
    assert M.token_recall("None", "0") == 1.0


@pytest.mark.parametrize(("text", "index"), [
    ("The answer is a nodule", None),  # the article "a" is not option A
    ("The answer is a CT scan", 1),  # article skipped, then the option text
    ("The answer is not A; the answer is B.", 1),  # the last cue wins
    ("I think B is right", 1),  # fallback: a stand-alone capital letter
    ("A large mass, most likely (C)", 2),  # bracketed letter
    ("A large mass is seen", None),
    ("Answer: a", 0),
])
def test_parse_choice_articles_last_cue_and_fallback(text, index):
    assert M.parse_choice(text, OPTS) == index


def test_adamllm_prompt_style_renders_the_benchmark_input_format():
    """PMC-VQA `input` in AdaptLLM/biomed-VQA-benchmark (sent as the whole user turn by bigai-ai/QA-Synthesizer
    vllm_inference/utils/task.py `BaseHFTask.get_raw_question`): 'Question: ...\\nThe choices are:\\n(A) ...'."""
    from posttrain.eval.examples import Example
    from posttrain.eval.tasks import get_task

    ex = Example("q1", b"", "What modality is shown?", "B", "choice", ["CT and MRI", "MRI and CT"])
    assert get_task("pmc_vqa", "adamllm").render(ex) == (
        "Question: What modality is shown?\nThe choices are:\n(A) CT and MRI\n(B) MRI and CT")
    assert get_task("pmc_vqa").render(ex) != get_task("pmc_vqa", "adamllm").render(ex)
    vqa = Example("s1", b"", "Is the lung abnormal?", "yes", "closed", None)
    assert get_task("slake", "adamllm").render(vqa) == "Is the lung abnormal?"
    with pytest.raises(ValueError, match="prompt style"):
        get_task("slake", "bogus")


def ref_rouge_l(hyp, ref):
    """pltrdy/rouge rouge_l_summary_level as called by QA-Synthesizer utils/metric.py `rouge` (exclusive sets)."""
    def sents(t):
        return [" ".join(p.split()).split(" ") for p in t.split(".") if len(p) > 0]

    def lcs(x, y):
        T = {(i, j): 0 for i in range(len(x) + 1) for j in range(len(y) + 1)}
        for i in range(1, len(x) + 1):
            for j in range(1, len(y) + 1):
                T[i, j] = T[i - 1, j - 1] + 1 if x[i - 1] == y[j - 1] else max(T[i - 1, j], T[i, j - 1])

        def rec(i, j):
            if i == 0 or j == 0:
                return []
            if x[i - 1] == y[j - 1]:
                return rec(i - 1, j - 1) + [x[i - 1]]
            return rec(i - 1, j) if T[i - 1, j] > T[i, j - 1] else rec(i, j - 1)
        return set(rec(len(x), len(y)))

    h, r = sents(hyp), sents(ref)
    if not h or not r:
        return 0.0
    union = set().union(*(lcs(rs, hs) for rs in r for hs in h))
    p, rec_ = len(union) / len({w for s in h for w in s}), len(union) / len({w for s in r for w in s})
    return 2 * p * rec_ / (p + rec_ + 1e-8)


@pytest.mark.parametrize(("hyp", "ref", "hand"), [
    ("the cat sat", "the cat ate", 2 / 3),  # LCS {the, cat}: p = r = 2/3
    ("a b. c d", "a c. b d", 1.0),  # union LCS over sentence pairs {a, b, c, d} (token-level LCS F1 would be 0.5)
    ("Mix the flour", "mix the flour", 2 / 3),  # case kept: 'Mix' != 'mix'
    ("", "anything", 0.0),  # the package raises on an empty text; the reference scores 0
])
def test_rouge_package_l(hyp, ref, hand):
    assert ref_rouge_l(hyp, ref) == pytest.approx(hand, abs=1e-6)
    assert R.rouge_package_l(hyp, ref) == pytest.approx(hand, abs=1e-6)
    for h, r in (("Boil water. Add pasta and salt. Drain.", "Boil the water. Add salt, then pasta. Drain well."),
                 ("x y x y z", "y x z z x")):
        assert R.rouge_package_l(h, r) == pytest.approx(ref_rouge_l(h, r))


def ref_multilabel_f1(resp, gold, id2name):
    """QA-Synthesizer utils/metric.py parse_multi_label_response + compute_multi_label_scores(..., 'f1')."""
    found, text = [], resp.lower()
    for i, a in sorted(id2name.items(), key=lambda kv: len(kv[1]), reverse=True):
        if a.lower() in text:
            found.append(i)
            text = text.replace(a.lower(), "")
    name2id = {v: k for k, v in id2name.items()}
    y_true = [int(i in [name2id[g] for g in gold]) for i in sorted(id2name)]
    y_pred = [int(i in found) for i in sorted(id2name)]
    tp = sum(t and p for t, p in zip(y_true, y_pred))
    denom = sum(y_true) + sum(y_pred)
    return 1.0 if denom == 0 else 2 * tp / denom  # sklearn f1_score, zero_division=1


def test_foodseg_reference_f1():
    vocab = ["egg", "rice", "egg tart", "tea", "other ingredients"]
    id2name = {1: "egg", 2: "rice", 3: "egg tart", 4: "tea"}  # the reference drops background and id 103
    for resp, gold, hand in [
        ("An egg tart and rice", ["egg tart", "egg"], 0.5),  # 'egg' inside 'egg tart' is consumed first
        ("steamed rice, tea", ["rice", "tea"], 1.0),
        ("nothing I know", [], 1.0),  # zero_division=1
    ]:
        assert ref_multilabel_f1(resp, gold, id2name) == pytest.approx(hand)
        assert R.multilabel_reference_f1(resp, gold, vocab) == pytest.approx(hand)
