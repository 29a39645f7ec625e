"""Method check driver: score arithmetic, data-run configs, and the fast end-to-end direction check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.core import batched_engine
from pipelines.experiments.method_check import cli, evaluation, experiment


def _scores(open_recall, closed, acc):
    return {"slake": {"metrics": {"open_recall": open_recall, "closed_accuracy": closed}},
            "pmc_vqa": {"metrics": {"accuracy": acc, "unparsed": 0}}}


def test_summary_score_is_the_mean_of_three_metrics():
    assert evaluation.summary_score(_scores(0.3, 0.6, 0.9)) == pytest.approx(0.6)
    assert evaluation.summary_score(_scores(0.0, 0.0, 0.0)) == 0.0


def test_aggregate_runs_mean_and_spread_per_condition():
    runs = [{"condition": "a", "seed": s, "val": {"score": v}, "test": {"score": t}}
            for s, v, t in ((0, 0.1, 0.2), (1, 0.3, 0.4), (2, 0.2, 0.6))]
    runs.append({"condition": "b", "seed": 0, "val": {"score": 0.5}, "test": {"score": 0.7}})
    table = experiment.aggregate_runs(runs)
    assert table["a"]["test"]["mean"] == pytest.approx(0.4)
    assert table["a"]["test"]["stdev"] == pytest.approx(0.2)
    assert (table["a"]["val"]["min"], table["a"]["val"]["max"]) == (0.1, 0.3)
    assert table["b"]["test"] == {"mean": 0.7, "stdev": 0.0, "min": 0.7, "max": 0.7, "n": 1, "values": [0.7]}


def test_format_table_lists_every_condition():
    runs = [{"condition": c, "seed": 0, "val": _scores(0.1, 0.5, 0.25) | {"score": 0.1},
             "test": _scores(0.2, 0.5, 0.25) | {"score": 0.2 + i}} for i, c in enumerate(("base", "filtered"))]
    text = cli.format_table({"runs": runs, "table": experiment.aggregate_runs(runs)})
    rows = text.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["base", "filtered"]
    assert "1.200" in rows[1]


@pytest.mark.parametrize("name", sorted(experiment.DATA_RUNS))
def test_data_run_configs_differ_only_where_the_condition_says(name, tmp_path):
    cfg = experiment.MethodCheckConfig()
    rc = experiment.run_config(name, cfg, tmp_path / "in.json", tmp_path / "synth", tmp_path / "judge")
    assert rc.synth.model == str(tmp_path / "synth") and rc.judge.model == str(tmp_path / "judge")
    assert Path(rc.judge.prompt).is_file() and rc.synth.max_tokens == cfg.synth_max_tokens
    expected = {"captions": ("caption_only", "combined"), "filtered": ("single_stage", "combined"),
                "unfiltered": ("single_stage", "unfiltered"), "two_stage": ("two_stage", "combined")}[name]
    assert (rc.mix.strategy, rc.compose.mode) == expected
    assert ("synth" in rc.stages) == (name != "captions")


def test_learning_rate_is_chosen_on_validation_scores_ties_to_the_smaller():
    assert experiment.choose_lr({3e-4: 0.2, 1e-3: 0.3}) == 1e-3
    assert experiment.choose_lr({3e-4: 0.3, 1e-3: 0.3, 1e-4: 0.1}) == 3e-4
    assert experiment.choose_lr({1e-3: 0.0}) == 1e-3


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        experiment.MethodCheckConfig(n_domians=3)


@pytest.mark.miniworld
@pytest.mark.vllm
@pytest.mark.slow
def test_quick_method_check_does_not_collapse_the_model(tmp_path):
    """The fast version (`--quick`): the full run's data (160 caption images) and test set (32 images), base
    vs filtered single-stage SFT only, seed 0, at the learning rate the full run chose on validation (1e-4).

    Asserted: what the full run (docs/method-check.md, issue 17 re-run with judge recipe 2) supports. It supports
    no "filtered > base" direction (filtered - base = -0.014 +- 0.012 over three seeds; the oracle ceiling itself is
    at the base, 0.296 +- 0.005, so no direction can show at this size), so the test asserts that the method does not
    collapse the model: filtered > base - COLLAPSE_MARGIN, the mean gap minus three seed standard deviations; a
    collapsed run (the fixed-rate 1e-3 run of the record lost 0.12 against its base) fails it. Also asserted: nothing
    is lost on the way, and the judge rejects more synthesized tasks than it keeps (110 of 154 in the full run).
    Needs the miniworld models (built once and cached; the generalist takes ~17 min of CPU cold).
    """
    result = experiment.run(experiment.MethodCheckConfig(out=str(tmp_path / "mc"), **cli.QUICK))
    table = result["table"]
    assert table["filtered"]["test"]["mean"] > table["base"]["test"]["mean"] - COLLAPSE_MARGIN, cli.format_table(result)
    stages = result["data"]["filtered"]["stages"]
    assert all(c["in"] == c["out"] + c["rejected"] for c in stages.values())  # nothing lost
    assert stages["synth"]["in"] == experiment.MethodCheckConfig().n_domain and stages["judge"]["in"] > 0
    assert stages["judge"]["rejected"] > stages["judge"]["out"]
    saved = json.loads((tmp_path / "mc" / "results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(table))


COLLAPSE_MARGIN = 0.05  # full run: filtered - base = -0.014 +- 0.012 (3 seeds); -0.014 - 3 * 0.012 = -0.050


def test_batched_engine_matches_the_one_at_a_time_engine(tiny_vlm_path):
    """Same greedy answers as pipelines.core.engines.TransformersEngine, prompts of different lengths in one batch."""
    from PIL import Image

    from pipelines.fixtures.tiny import STOP_STRING
    from posttrain.eval.runner import chat_renderer
    from pipelines.core.resources import EngineResources
    from pipelines.core.engines import GenRequest, SamplingSettings, make_engine

    ref = make_engine(tiny_vlm_path, EngineResources(engine="transformers", device="cpu"),
                      sampling=SamplingSettings(max_tokens=6, stop=[STOP_STRING]), multimodal=True,
                      max_model_len=512)
    ours = batched_engine.BatchedVLMEngine(tiny_vlm_path, max_tokens=6)
    chat = chat_renderer(ours.processor)
    reqs = [GenRequest(chat(q), [Image.new("RGB", (32 + 16 * i, 32), c)])
            for i, (q, c) in enumerate([("Describe the image.", "red"), ("What colour is the big square here?", "blue"),
                                        ("Is it?", "white")])]
    got, want = ours.generate(reqs), ref.generate(reqs)
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.n_prompt_tokens for g in got] == [ours.count_prompt_tokens(r) for r in reqs]
    assert len({g.n_prompt_tokens for g in got}) > 1  # the batch really mixed lengths (left padding)
    assert ours.generate([]) == []
