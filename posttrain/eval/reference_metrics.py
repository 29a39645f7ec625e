"""Reference-compatible scores: the AdaMLLM evaluation code's own arithmetic, so numbers compare with the
paper's tables (arXiv 2411.19930). Reported beside the project's metrics, never instead of them.

Sources (bigai-ai/QA-Synthesizer vllm_inference/utils/):
  task.py `VQA_RAD.evaluate` (SLAKE, PathVQA, VQA-RAD): both texts lower-cased and passed through LLaVA-Med's
      `normalize_word`; OPEN -> recall of `calculate_f1score`; CLOSED -> hit when the prediction contains the
      substring 'yes' or 'no' and the reference as a substring. The substring test is a known bug (the letters
      "no" in "nodule" count); `metrics.closed_correct` is the fixed score.
  llava_med/glossary.py, llava_med/evaluate_metrics.py: copies of LLaVA-Med v1.0.0
      llava/eval/eval_metrics/{glossary,evaluate_metrics}.py.
  metric.py `parse_multi_choice_response` (from MMMU eval_utils): "(X)" anywhere, else " X ", else option text
      (responses longer than 5 characters); several candidates -> the last mentioned; none -> a seeded random
      option (the reference seeds with the example's position; so do we).
  metric.py `rouge` (Recipe1M): ROUGE-L F of the `rouge` package (pltrdy/rouge, rouge/rouge_score.py
      `rouge_l_summary_level`): sentences split on '.', words split on ' ', case kept, and the union of the
      LCS words over sentence pairs counted as a SET against the numbers of distinct words; errors score 0.
      The package rebuilds each LCS recursively, so a pair longer than Python's recursion limit errors (and
      scores 0) there; it is computed here.
  task.py `FoodSeg103`, metric.py `parse_multi_label_response`, `compute_multi_label_scores`: vocabulary
      phrases found in the lower-cased response, longest first, each removed once found; sklearn F1 over
      the vocabulary without background and "other ingredients" (ids 1..102), zero_division=1.
Not reproduced here: Nutrition5K (its recall needs the full ingredient vocabulary, which the examples do
not carry); it reports the project's metric only.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from posttrain.eval.metrics import LETTERS, gold_choice

# -- LLaVA-Med normalisation (glossary.py `normalize_word`) ---------------------------------------

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")
# The VQA contraction table maps a word written without apostrophes to its apostrophe form; it is built
# here from the apostrophe forms (keys = the form with apostrophes removed).
_CONTRACTED = (  # noqa: SIM905 - one readable block of words
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll let's ma'am mightn't mightn't've "
    "might've mustn't must've needn't not've o'clock oughtn't shan't she'd've she's should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
    "something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're "
    "they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've "
    "who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll "
    "y'all'd've you'd you'd've you'll you're you've"
).split()
_CONTRACTIONS = {c.replace("'", ""): c for c in _CONTRACTED}
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a look-ahead, so every '.' not before a digit goes
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def normalize_word(token: str) -> str:
    """LLaVA-Med's answer normalisation, step for step."""
    out = token
    for p in _PUNCT:
        # the test looks at the original text for every mark, as the original does
        if (p + " " in token or " " + p in token) or _COMMA_STRIP.search(token) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The original passes re.UNICODE (32) as sub()'s third positional argument, i.e. count=32.
    token = _PERIOD_STRIP.sub("", out, 32)
    words = [_NUMBERS.get(w, w) for w in token.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words).replace(",", "")


def _unigrams(text: str) -> Counter[str]:
    return Counter(text.lower().strip().split())


def llava_med_recall(prediction: str, answer: str) -> float:
    """Recall of LLaVA-Med's `calculate_f1score(prediction, answer)` on lower-cased, normalised texts.
    As there, true positives count the prediction's occurrences (so a repeated word can push recall up)."""
    cand = _unigrams(normalize_word(normalize_word(prediction.lower())))
    ref = _unigrams(normalize_word(normalize_word(answer.lower())))
    if not cand or not ref:
        return 0.0
    tp = sum(n for w, n in cand.items() if w in ref)
    fn = sum(n for w, n in ref.items() if w not in cand)
    return 0.0 if tp == 0 else tp / (tp + fn)


def reference_closed(prediction: str, answer: str) -> float:
    """The reference CLOSED score: substring tests on normalised texts (the known bug included)."""
    pred = normalize_word(prediction.lower())
    gold = normalize_word(answer.lower())
    return float(("yes" in pred or "no" in pred) and gold in pred)


# -- multiple choice (metric.py `parse_multi_choice_response`) ------------------------------------


def mmmu_choice(response: str, all_choices: Sequence[str], index2ans: dict[str, str], seed: int) -> tuple[str, bool]:
    """(chosen index, guessed) exactly as the reference parser; `guessed` marks the seeded random fallback."""
    for ch in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(ch)
    response = " " + response + " "
    candidates: list[str] = []
    bracketed = False
    by_index = True
    for c in all_choices:
        if f"({c})" in response:
            candidates.append(c)
            bracketed = True
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response) > 5:
        candidates = [i for i, a in index2ans.items() if a.lower() in response.lower()]
        by_index = not candidates
    if not candidates:
        return random.Random(seed).choice(list(all_choices)), True
    if len(candidates) == 1:
        return candidates[0], False
    if by_index:
        pos = [response.rfind(f"({c})" if bracketed else f" {c} ") for c in candidates]
    else:
        pos = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[pos.index(max(pos))], False  # np.argmax: first of the maxima


# -- ROUGE-L of the `rouge` package (metric.py `rouge`) -------------------------------------------


def _sentences(text: str) -> list[list[str]]:
    """The package's split: on '.', pieces of length 0 dropped, whitespace runs joined by ' ', then split(' ')."""
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if len(piece) > 0]


def _lcs_words(x: list[str], y: list[str]) -> set[str]:
    """Words of the LCS of x and y, traced back as the package does (up on a strict gain, else left)."""
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(table[i - 1][j], table[i][j - 1])
    out, i, j = set(), len(x), len(y)
    while i and j:
        if x[i - 1] == y[j - 1]:
            out.add(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out


def rouge_package_l(prediction: str, reference: str) -> float:
    """`Rouge().get_scores(prediction, reference)[0]["rouge-l"]["f"]`, 0 where the package raises."""
    hyp, ref = _sentences(prediction), _sentences(reference)
    if not hyp or not ref:
        return 0.0
    m = len({w for s in ref for w in s})
    n = len({w for s in hyp for w in s})
    union: set[str] = set()
    for r in ref:
        for h in hyp:
            union |= _lcs_words(r, h)
    p, r_ = len(union) / n, len(union) / m
    return 2.0 * (p * r_ / (p + r_ + 1e-8))


# -- multi-label (FoodSeg103) ----------------------------------------------------------------------

_EXCLUDED_LABELS = ("other ingredients",)  # FoodSeg103 id 103, popped by the reference with background


def multilabel_reference_f1(prediction: str, gold: Sequence[str], vocab: Sequence[str]) -> float:
    """F1 of the labels the reference parser finds in `prediction` against `gold`, over `vocab`."""
    vocab = [v for v in vocab if v.lower() not in _EXCLUDED_LABELS]
    text, found = prediction.lower(), set()
    for v in sorted(vocab, key=len, reverse=True):  # stable: equal lengths keep vocabulary order
        if v.lower() in text:
            found.add(v)
            text = text.replace(v.lower(), "")
    g = {v for v in gold if v in vocab}
    tp, fp, fn = len(found & g), len(found - g), len(g - found)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


# -- aggregation ----------------------------------------------------------------------------------


def reference_aggregate(records: Iterable[dict]) -> dict[str, float]:
    """Reference-compatible task scores (fractions) from the records `metrics.aggregate` reads; only the
    answer types scored here (open, closed, choice, classification, generation, multilabel). Position = seed."""
    scores: dict[str, list[float]] = {}
    for pos, r in enumerate(records):
        kind, text, ans = r["answer_type"], r.get("prediction") or "", r["answer"]
        if kind == "open":
            scores.setdefault("open_recall", []).append(llava_med_recall(text, ans))
        elif kind == "closed":
            scores.setdefault("closed_accuracy", []).append(reference_closed(text, ans))
        elif kind == "multilabel" and r.get("choices"):
            scores.setdefault("f1", []).append(multilabel_reference_f1(text, ans, r["choices"]))
        elif kind == "generation":
            scores.setdefault("rouge_l", []).append(rouge_package_l(text, ans))
        elif kind in ("choice", "classification"):
            choices = r.get("choices") or []
            # PMC-VQA options are letters; Food101's are class indices "0".."100" (task.py `Food101`)
            keys = list(LETTERS[: len(choices)]) if kind == "choice" else [str(i) for i in range(len(choices))]
            got, _ = mmmu_choice(text, keys, dict(zip(keys, choices, strict=True)), pos)
            scores.setdefault("accuracy", []).append(float(got == keys[gold_choice(ans, choices)]))
    return {k: sum(v) / len(v) for k, v in scores.items()}
