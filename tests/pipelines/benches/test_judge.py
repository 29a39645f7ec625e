"""The judge bench's items and agreement check (`pipelines/bench.py filter`); no engine is started here."""

from __future__ import annotations

import math

from pipelines.benches import judge as judge_bench
from pipelines.core.rows import get_tasks


def test_lead_prepends_other_answers_and_keeps_the_conclusion_last():
    plain, led = judge_bench.image_tasks(3, lead=0), judge_bench.image_tasks(3, lead=2)
    assert len(plain) == len(led) > 0
    for p, q in zip(plain, led):
        assert {k: p[k] for k in ("instruction", "precise", "label")} == {k: q[k] for k in ("instruction", "precise", "label")}
        assert q["informative"].endswith(p["informative"]) and len(q["informative"]) > len(p["informative"])
    assert {t["label"] for t in plain} <= {"yes", "no", "open"}


def test_rows_are_whole_images_without_the_truth_label():
    rows, nxt = judge_bench.bench_rows(30, start=5, lead=1)
    tasks = [t for r in rows for t in get_tasks(r)]
    assert len(tasks) >= 30 and nxt == 5 + len(rows)
    assert len(tasks) - len(get_tasks(rows[-1])) < 30  # stops at the first image that reaches the count
    assert all("label" not in t for t in tasks)
    assert [r["id"] for r in rows] == [f"img{i}" for i in range(5, nxt)]


def test_agreement_compares_label_and_logprob_within_tolerance():
    a = {"x": ("yes", math.log(0.9)), "y": ("no", -0.5), "z": ("open", -1.0), "only_a": ("yes", -0.1)}
    b = {"x": ("yes", math.log(0.9) + 0.01), "y": ("yes", -0.5), "z": ("open", -1.2)}
    r = judge_bench.agreement(a, b, tol=0.05)
    assert r["compared"] == 3 and r["missing"] == 1
    assert r["same_label"] == round(2 / 3, 4)
    assert r["logprob_within_tol"] == round(2 / 3, 4)  # 0.01 and 0.0 within, 0.2 not
    assert math.isclose(r["logprob_max_abs_diff"], 0.2, abs_tol=1e-5)
