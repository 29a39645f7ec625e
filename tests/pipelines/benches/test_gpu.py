"""The GPU check (`pipelines/bench.py gpu`) runs end to end on CPU in its --dry-run mode, so it cannot rot.

MFU counts model FLOPs as 6 x parameters per trained token (Kaplan et al. 2020, "Scaling Laws for Neural
Language Models", sec. 2.1: C ~= 6N per token, embeddings excluded); the parameter split is checked on a
module small enough to count by hand.
"""

from __future__ import annotations

import json
import sys

import torch

from pipelines.benches import gpu as gpu_bench
from pipelines.benches import trl_side


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(10, 4)  # 40, excluded (a lookup, no FLOPs)
        self.layer = torch.nn.Linear(4, 3)  # 12 + 3 = 15 text
        self.lm_head = torch.nn.Linear(3, 10, bias=False)  # 30 text
        self.vision_model = torch.nn.Linear(2, 2)  # 4 + 2 = 6 vision


def test_parameter_split_for_model_flops():
    assert gpu_bench.param_counts(_Toy()) == (45, 6)


def test_rate_excludes_warmup_steps():
    stamps = [(1.0, 100), (2.0, 300), (4.0, 700), (5.0, 900)]  # (seconds, cumulative tokens) after each step
    assert gpu_bench._rate(stamps, 1) == (900 - 300) / (5.0 - 2.0)
    assert gpu_bench._rate(stamps, 0) == (900 - 100) / (5.0 - 1.0)


def test_dry_run_prints_one_json_line_of_figures(capsys):
    assert gpu_bench.main(["--dry-run"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["dry_run"] and res["size"] == "tiny"
    sides = ("ours", "hf_trainer", "trl_sft") if trl_side.available() else ("ours", "hf_trainer")
    assert res["trl"] == trl_side.version() and ("trl_sft" in res) == trl_side.available()
    for side in sides:
        spread = res[side]["tokens_per_s"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        assert 0 <= res[side]["pad_fraction"] < 1 and res[side]["steps"] == 3
    assert res["ratio_median"] == res["ours"]["tokens_per_s"]["median"] / res["hf_trainer"]["tokens_per_s"]["median"]
    eng = res["engine_transformers"]
    assert eng["images"] == 2 and eng["images_per_s"] > 0 and eng["output_tokens_per_s"] > 0
    assert res["vllm"] in ("not installed",) or res["vllm"].startswith("installed")


def test_trl_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # what an environment without trl looks like to `import trl`
    assert trl_side.version() == "not installed" and not trl_side.available()
