"""Method check driver: score arithmetic, data-run configs, and the fast end-to-end direction check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain import method_check as mc


def _scores(open_recall, closed, acc):
    return {"slake": {"metrics": {"open_recall": open_recall, "closed_accuracy": closed}},
            "pmc_vqa": {"metrics": {"accuracy": acc, "unparsed": 0}}}


def test_summary_score_is_the_mean_of_three_metrics():
    assert mc.summary_score(_scores(0.3, 0.6, 0.9)) == pytest.approx(0.6)
    assert mc.summary_score(_scores(0.0, 0.0, 0.0)) == 0.0


def test_aggregate_runs_mean_and_spread_per_condition():
    runs = [{"condition": "a", "seed": s, "val": {"score": v}, "test": {"score": t}}
            for s, v, t in ((0, 0.1, 0.2), (1, 0.3, 0.4), (2, 0.2, 0.6))]
    runs.append({"condition": "b", "seed": 0, "val": {"score": 0.5}, "test": {"score": 0.7}})
    table = mc.aggregate_runs(runs)
    assert table["a"]["test"]["mean"] == pytest.approx(0.4)
    assert table["a"]["test"]["stdev"] == pytest.approx(0.2)
    assert (table["a"]["val"]["min"], table["a"]["val"]["max"]) == (0.1, 0.3)
    assert table["b"]["test"] == {"mean": 0.7, "stdev": 0.0, "min": 0.7, "max": 0.7, "n": 1, "values": [0.7]}


def test_format_table_lists_every_condition():
    runs = [{"condition": c, "seed": 0, "val": _scores(0.1, 0.5, 0.25) | {"score": 0.1},
             "test": _scores(0.2, 0.5, 0.25) | {"score": 0.2 + i}} for i, c in enumerate(("base", "filtered"))]
    text = mc.format_table({"runs": runs, "table": mc.aggregate_runs(runs)})
    rows = text.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["base", "filtered"]
    assert "1.200" in rows[1]


@pytest.mark.parametrize("name", sorted(mc.DATA_RUNS))
def test_data_run_configs_differ_only_where_the_condition_says(name, tmp_path):
    cfg = mc.MethodCheckConfig()
    rc = mc.run_config(name, cfg, tmp_path / "in.json", tmp_path / "synth", tmp_path / "judge")
    assert rc.synth.model == str(tmp_path / "synth") and rc.judge.model == str(tmp_path / "judge")
    assert Path(rc.judge.prompt).is_file() and rc.synth.max_tokens == cfg.synth_max_tokens
    expected = {"captions": ("caption_only", "combined"), "filtered": ("single_stage", "combined"),
                "unfiltered": ("single_stage", "unfiltered"), "two_stage": ("two_stage", "combined")}[name]
    assert (rc.mix.strategy, rc.compose.mode) == expected
    assert ("synth" in rc.stages) == (name != "captions")


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        mc.MethodCheckConfig(n_domians=3)


@pytest.mark.miniworld
@pytest.mark.vllm
@pytest.mark.slow
def test_quick_method_check_runs_end_to_end_and_adaptation_does_not_break_the_model(tmp_path):
    """The fast version (`--quick`: base vs filtered single-stage SFT, seed 0, 64 caption images, 12 test images).

    What the full run (docs/method-check.md, 3 seeds) supports, and so what is asserted here:
    - the claim "adapted > base" did NOT hold at this scale: the filtered condition scored 0.190 ± 0.028 (0.157..0.208)
      on the test set against the base model's 0.187, inside the seed spread. A test asserting it would
      pass or fail by seed luck, so it is not asserted.
    - what did hold: adaptation through the real stages does not make the model worse than the base by more
      than the seed spread (the first, under-trained run failed exactly this: 0.05 against 0.19). The
      tolerance, 0.06, is twice the filtered condition's seed standard deviation in the full run (0.028); the
      full run's worst filtered seed (0.157) is inside it, the first run's 0.05 far outside.
    - the judge sees every parsed task and rejects most of the synthesizer's output on domain captions.
    Needs the miniworld models (built once and cached; ~10 min on idle cores, far longer on busy ones).
    """
    result = mc.run(mc.MethodCheckConfig(out=str(tmp_path / "mc"), **mc.QUICK))
    table = result["table"]
    assert table["filtered"]["test"]["mean"] >= table["base"]["test"]["mean"] - TOLERANCE, mc.format_table(result)
    stages = result["data"]["filtered"]["stages"]
    assert all(c["in"] == c["out"] + c["rejected"] for c in stages.values())  # nothing lost
    assert stages["synth"]["in"] == mc.QUICK["n_domain"] and stages["judge"]["in"] > 0
    assert stages["judge"]["rejected"] > stages["judge"]["out"]
    saved = json.loads((tmp_path / "mc" / "results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(table))


TOLERANCE = 0.06


def test_batched_engine_matches_the_one_at_a_time_engine(tiny_vlm_path):
    """Same greedy answers as synth.engines.TransformersEngine, prompts of different lengths in one batch."""
    from PIL import Image

    from pipelines.tiny import STOP_STRING
    from posttrain.eval.runner import chat_renderer
    from synth.config import EngineResources
    from synth.engines import GenRequest, SamplingSettings, make_engine

    ref = make_engine(tiny_vlm_path, EngineResources(engine="transformers", device="cpu"),
                      sampling=SamplingSettings(max_tokens=6, stop=[STOP_STRING]), multimodal=True,
                      max_model_len=512)
    ours = mc.BatchedVLMEngine(tiny_vlm_path, max_tokens=6)
    chat = chat_renderer(ours.processor)
    reqs = [GenRequest(chat(q), [Image.new("RGB", (32 + 16 * i, 32), c)])
            for i, (q, c) in enumerate([("Describe the image.", "red"), ("What colour is the big square here?", "blue"),
                                        ("Is it?", "white")])]
    got, want = ours.generate(reqs), ref.generate(reqs)
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.n_prompt_tokens for g in got] == [ours.count_prompt_tokens(r) for r in reqs]
    assert len({g.n_prompt_tokens for g in got}) > 1  # the batch really mixed lengths (left padding)
    assert ours.generate([]) == []
