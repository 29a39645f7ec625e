"""Answer metrics: pure functions over strings, each scoring one prediction against one reference.

All text comparisons go through `normalize` (lowercase, punctuation and English articles removed,
whitespace collapsed) and compare TOKENS, never substrings: "a nodule is present" contains the
letters "no" but not the token "no". Punctuation is any Unicode punctuation or symbol (em-dash, curly
quotes), so "Yes—the lesion" reads as "yes the lesion". Open-question recall also maps number words
to digits as LLaVA-Med's normalisation does. Aggregation over a task lives in `aggregate`; scores
computed the way the AdaMLLM reference code computes them live in `reference_metrics`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = re.compile(r"[^\w\s]|_")  # any non-word character: ASCII and Unicode punctuation alike
# LLaVA-Med's number map (llava/eval/eval_metrics/glossary.py `manual_map`), used for open-question recall.
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ITEM_SPLIT = re.compile(r"[,;\n]|\band\b|\bor\b")
LETTERS = string.ascii_uppercase


def tokens(text: str) -> list[str]:
    """Normalized tokens: NFKC, lowercase, punctuation -> space, articles dropped."""
    text = _PUNCT.sub(" ", unicodedata.normalize("NFKC", text or "").lower())
    return [t for t in text.split() if t not in ARTICLES]


def normalize(text: str) -> str:
    return " ".join(tokens(text))


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    """True when `needle` occurs in `haystack` as a contiguous token run."""
    n = len(needle)
    if n == 0:
        return False
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


# -- open and closed questions -------------------------------------------------------------------


def token_recall(prediction: str, answer: str) -> float:
    """Share of the reference's normalized tokens present in the prediction (multiset count).

    Raises ValueError on an empty reference: loaders reject such examples, so one here is a bug.
    """
    gold = Counter(_number_tokens(answer))
    if not gold:
        raise ValueError(f"empty reference answer {answer!r}")
    pred = Counter(_number_tokens(prediction))
    return sum((gold & pred).values()) / sum(gold.values())


def _number_tokens(text: str) -> list[str]:
    """`tokens` with number words as digits ("two" == "2"), as LLaVA-Med normalises open answers."""
    return [NUMBER_WORDS.get(t, t) for t in tokens(text)]


def yes_no(text: str) -> str | None:
    """'yes' / 'no' from the first polarity token, or None when there is none."""
    for t in tokens(text):
        if t in ("yes", "no"):
            return t
    return None


def closed_correct(prediction: str, answer: str) -> bool:
    """Closed question: yes/no references compare polarity tokens; others need the answer's tokens
    as a contiguous run in the prediction (e.g. 'left' for 'Which side?')."""
    gold = yes_no(answer) if normalize(answer) in ("yes", "no") else None
    if gold is not None:
        return yes_no(prediction) == gold
    return _contains(tokens(prediction), tokens(answer))


# -- multiple choice ------------------------------------------------------------------------------

_CUE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*(?P<open>\()?(?P<letter>[A-Za-z])(?P<close>\))?"
                  r"(?![A-Za-z])(?P<word>\s+[a-z])?", re.I)
_LEAD = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|:|$)")
_WHOLE = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]]?[.:]?\s*$")
_BRACKETED = re.compile(r"\(([A-Z])\)")
_CAPITAL = re.compile(r"(?<![\w(])(?P<letter>[A-Z])(?![\w)])(?P<word>\s+[a-z])?")
_WORD_LETTERS = frozenset("AaI")  # one-letter English words: read as such when a lower-case word follows


def _last_letter(rx: re.Pattern[str], text: str, idx) -> int | None:
    """Index of the option named by the LAST match of `rx` (the reference parser keeps the last mention),
    skipping an unbracketed 'A'/'a'/'I' followed by a word: an English word ("the answer is a nodule")."""
    found = None
    for m in rx.finditer(text):
        groups = m.groupdict()
        bracketed = groups.get("open") and groups.get("close")
        if not bracketed and m.group("letter") in _WORD_LETTERS and groups.get("word"):
            continue
        if idx(m.group("letter")) is not None:
            found = idx(m.group("letter"))
    return found


def parse_choice(prediction: str, choices: Sequence[str]) -> int | None:
    """Index of the option the prediction names, or None when it cannot be told (never a guess).

    Tried in order: a bare letter ("B", "(B)", "b."); the last cue ("The answer is B", "Answer: b", "option
    (C)"; "the answer is a nodule" is an article); a leading letter with punctuation ("B. CT scan"; "A CT
    scan" is an article); the last bracketed capital "(B)"; the text of exactly one option (longest match
    wins when one option's text contains another's); as a fallback, the last stand-alone capital letter of
    an option ("I think B is right"), as the reference parser (MMMU's) does before matching option text.
    """
    n = len(choices)
    letters = LETTERS[:n] if n <= len(LETTERS) else ""

    def idx(letter: str) -> int | None:
        i = letters.find(letter.upper()) if letters else -1
        return i if i >= 0 else None

    text = prediction or ""
    m = _WHOLE.search(text)
    if m and idx(m.group(1)) is not None:
        return idx(m.group(1))
    got = _last_letter(_CUE, text, idx)
    if got is not None:
        return got
    m = _LEAD.search(text)
    if m and idx(m.group(1)) is not None:
        return idx(m.group(1))
    bracketed = [idx(b) for b in _BRACKETED.findall(text) if idx(b) is not None]
    if bracketed:
        return bracketed[-1]
    pred = tokens(text)
    hits = [i for i, c in enumerate(choices) if _contains(pred, tokens(c))]
    # Drop options whose tokens sit inside another hit ("CT" inside "CT scan").
    hits = [i for i in hits if not any(j != i and _contains(tokens(choices[j]), tokens(choices[i])) for j in hits)]
    distinct = {normalize(choices[i]) for i in hits}
    if len(distinct) == 1:
        return hits[0]
    if hits:
        return None  # several options named: ambiguous
    return _last_letter(_CAPITAL, text, idx)


# -- generation, sets, labels ---------------------------------------------------------------------


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure over normalized tokens (beta=1: F1; coco-caption uses 1.2)."""
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return 0.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return (1 + beta**2) * prec * rec / (rec + beta**2 * prec)


def split_items(text: str) -> list[str]:
    """'rice, beans and corn.' -> ['rice', 'beans', 'corn'] (normalized, empties dropped, order kept)."""
    out = []
    for part in _ITEM_SPLIT.split(text or ""):
        n = normalize(part)
        if n and n not in out:
            out.append(n)
    return out


def set_recall(prediction: str, gold: Iterable[str]) -> float:
    """Share of reference items whose tokens occur (contiguously) in the prediction."""
    items = {normalize(g) for g in gold} - {""}
    if not items:
        raise ValueError("empty reference set")
    pred = tokens(prediction)
    return sum(_contains(pred, i.split()) for i in items) / len(items)


def multilabel_f1(predicted: Iterable[str], gold: Iterable[str]) -> float:
    """F1 between two label sets (normalized); two empty sets score 1."""
    p = {normalize(x) for x in predicted} - {""}
    g = {normalize(x) for x in gold} - {""}
    if not p and not g:
        return 1.0
    return 2 * len(p & g) / (len(p) + len(g))


def accuracy(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    if not y_true:
        raise ValueError("no examples")
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def macro_f1(y_true: Sequence[object], y_pred: Sequence[object], labels: Sequence[object] | None = None) -> float:
    """Unweighted mean F1 over `labels` (default: classes seen in y_true or y_pred, as sklearn).

    A None prediction (unparsed) is a miss for its true class and never a class of its own.
    """
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    if not y_true:
        raise ValueError("no examples")
    classes = list(labels) if labels is not None else sorted({*y_true, *y_pred} - {None}, key=str)
    pairs = list(zip(y_true, y_pred, strict=True))
    f1s = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in pairs)
        fp = sum(t != c and p == c for t, p in pairs)
        fn = sum(t == c and p != c for t, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)


# -- task aggregation -----------------------------------------------------------------------------

ANSWER_TYPES = ("open", "closed", "choice", "generation", "set", "multilabel", "classification")


def gold_choice(answer: str, choices: Sequence[str]) -> int:
    """Index of the reference option: a letter ("B") or the option text itself."""
    a = (answer or "").strip()
    if len(a) == 1 and a.upper() in LETTERS[: len(choices)]:
        return LETTERS.index(a.upper())
    norm = [normalize(c) for c in choices]
    if normalize(a) in norm:
        return norm.index(normalize(a))
    raise ValueError(f"reference {answer!r} is not one of the options {list(choices)}")


def aggregate(records: Iterable[dict]) -> dict:
    """Task metrics from prediction records `{prediction, answer, answer_type, choices}`.

    A record whose prediction is None (rejected before generation, or missing) scores as wrong and is
    counted in `n_rejected`; a choice answer that names no option counts as wrong and in `unparsed`.
    Metrics are fractions in [0, 1]; counts are integers.
    """
    by_type: dict[str, list[float]] = {}
    counts: Counter[str] = Counter()
    n_rejected = 0
    unparsed = 0
    cls_true: list[object] = []
    cls_pred: list[object] = []
    cls_labels: list[str] = []
    for r in records:
        kind = r["answer_type"]
        if kind not in ANSWER_TYPES:
            raise ValueError(f"unknown answer_type {kind!r}; allowed: {ANSWER_TYPES}")
        counts[kind] += 1
        pred = r.get("prediction")
        if pred is None:
            n_rejected += 1
        text = pred or ""
        ans, choices = r["answer"], r.get("choices") or []
        if kind == "open":
            score = token_recall(text, ans)
        elif kind == "closed":
            score = float(closed_correct(text, ans))
        elif kind == "generation":
            score = rouge_l(text, ans)
        elif kind == "set":
            score = set_recall(text, ans)
        elif kind == "multilabel":
            score = multilabel_f1(split_items(text), ans)
        else:  # choice / classification
            gold = gold_choice(ans, choices)
            got = parse_choice(text, choices) if pred is not None else None
            unparsed += pred is not None and got is None
            score = float(got == gold)
            if kind == "classification":
                cls_true.append(normalize(choices[gold]))
                cls_pred.append(None if got is None else normalize(choices[got]))
                cls_labels = [normalize(c) for c in choices] if not cls_labels else cls_labels
        by_type.setdefault(kind, []).append(score)
    names = {"open": "open_recall", "closed": "closed_accuracy", "choice": "accuracy",
             "generation": "rouge_l", "set": "recall", "multilabel": "f1", "classification": "accuracy"}
    metrics: dict[str, float] = {names[k]: sum(v) / len(v) for k, v in by_type.items()}
    if cls_true:
        metrics["macro_f1"] = macro_f1(cls_true, cls_pred, labels=sorted(set(cls_labels) | set(cls_true)))
    if "choice" in by_type or "classification" in by_type:
        metrics["unparsed"] = unparsed
    n = sum(counts.values())
    return {"n": n, "n_rejected": n_rejected, "counts": dict(counts), "metrics": metrics}
