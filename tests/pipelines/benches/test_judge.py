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


class _FakeEngine:
    """Says " Yes" with log-prob -0.1 to every request, " No" when the precise answer is "none"."""

    def __init__(self, shift: float = 0.0):
        self.shift = shift

    def tokenizer(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}

    def count_prompt_tokens(self, req):
        return len(req.prompt.split())

    def generate(self, reqs):
        from pipelines.core.engines import GenResult

        out = []
        for r in reqs:
            no = r.prompt.rstrip().splitlines()[-2].endswith("none")
            out.append(GenResult(text=" No" if no else " Yes", n_prompt_tokens=1, n_output_tokens=1,
                                 finish_reason="stop", choice_logprob=-0.1 + self.shift))
        return out

    def close(self):
        pass


def test_measure_reports_rates_agreement_and_accuracy_without_an_engine():
    import argparse

    from filters.config import JudgeConfig
    from filters.judge import ConsistencyJudge

    cfg = JudgeConfig(model="unused", prompt=judge_bench.MINIWORLD_PROMPT)
    stages = {"on": ConsistencyJudge(cfg, engine=_FakeEngine()), "off": ConsistencyJudge(cfg, engine=_FakeEngine(0.01))}
    args = argparse.Namespace(items=20, lead=1, repeats=2, logprob_tol=0.05, model="fake", prompt=cfg.prompt)
    res = judge_bench._measure(stages, args)
    assert len(res["items_per_batch"]) == 2 and min(res["items_per_batch"]) >= 20
    for side in ("stage_on", "stage_off", "engine_on", "engine_off"):
        assert 0 < res[f"{side}_items_per_s"]["min"] <= res[f"{side}_items_per_s"]["max"]
    for part in ("agreement_stage", "agreement_engine"):
        a = res[part]
        assert a["compared"] == sum(res["items_per_batch"]) or part == "agreement_engine"
        assert a["missing"] == 0 and a["same_label"] == 1.0 and a["logprob_within_tol"] == 1.0
        assert abs(a["logprob_max_abs_diff"] - 0.01) < 1e-6
    assert 0 <= res["judge_accuracy_uncached"] <= 1 and set(res["truth_labels"]) <= {"yes", "no", "open"}
