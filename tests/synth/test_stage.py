"""SynthStage on real rows: canned output through a fake engine, the tiny VLM through transformers and vLLM."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pipelines.config import RunConfig, load_config
from pipelines.core.images import encode_png
from pipelines.core.rows import batch_to_rows, empty_row, reject_records, rows_to_batch
from pipelines.core.engines import GenRequest, GenResult
from synth.prompt import load_preset, render_continuation
from synth.stage import SynthStage

LLAVA = load_preset("llava_llama3")


def _png(color=(200, 10, 10), size=(40, 30)) -> bytes:
    return encode_png(Image.new("RGB", size, color))


def _row(i: int, caption: str, **kw) -> dict:
    return empty_row(id=f"r{i}", source_id=f"test#{i}", image=_png(), caption=caption, user_prompt="Describe.", **kw)


class FakeEngine:
    """Canned synthesizer output keyed by a caption word; counts ~1 token per 4 characters."""

    processor = None
    tokenizer = None

    def __init__(self, outputs: dict[str, tuple[str, str]]):
        self.outputs = outputs
        self.calls: list[list[GenRequest]] = []

    def count_prompt_tokens(self, req: GenRequest) -> int:
        return len(req.prompt) // 4 + 10 * len(req.images)

    def generate(self, requests):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            key = next(k for k in self.outputs if k in r.prompt)
            text, finish = self.outputs[key]
            out.append(GenResult(text, self.count_prompt_tokens(r), len(text) // 4, finish))
        return out

    def close(self):
        pass


def _run(stage: SynthStage, rows: list[dict]) -> list[dict]:
    return batch_to_rows(stage(rows_to_batch(rows)))


def test_canned_output_to_tasks_and_rejects():
    good = render_continuation(
        LLAVA,
        [("precise", "Is it red?", "Yes"), ("precise", "What shape?", "Square"),
         ("informative", "Is  it\nred?", "The square is painted red."), ("informative", "Size?", "Small.")],
    ) + LLAVA.user_start + "Answer with a precise response.\nWhat is"  # cut off by max_tokens
    engine = FakeEngine({"GOOD": (good, "length"), "JUNK": ("lorem ipsum <|eot_id|>", "stop")})
    cfg = RunConfig.model_validate({"synth": {"preset": "llava_llama3", "max_model_len": 200}})
    stage = SynthStage(cfg.synth, cfg.input.max_image_pixels, engine=engine)
    rows = [
        _row(0, "GOOD caption"),
        _row(1, "JUNK caption"),
        _row(2, "GOOD but " + "very long caption " * 60),  # > 200 tokens: too_long, never sent
        _row(3, "GOOD", reject_stage="ingest", reject_reason="unreadable_image"),  # passes untouched
        {**_row(4, "GOOD"), "image": b"not a png"},
    ]
    out = {r["id"]: r for r in _run(stage, rows)}
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 2  # one batched call, fitting rows only
    assert engine.calls[0][0].prompt.endswith(LLAVA.user_start) and len(engine.calls[0][0].images) == 1

    r0 = out["r0"]
    assert json.loads(r0["tasks"]) == [
        {"instruction": "Is it red?", "precise": "Yes", "informative": "The square is painted red."}
    ]
    rej = json.loads(r0["task_rejects"])
    assert sorted((x["reason"], x["instruction"]) for x in rej) == [("unpaired", "Size?"), ("unpaired", "What shape?")]
    assert {x.get("precise") or x.get("informative") for x in rej} == {"Square", "Small."}
    assert r0["synth_text"] == good and r0["n_output_tokens"] == len(good) // 4 and r0["n_prompt_tokens"] > 0
    assert json.loads(r0["counts"]) == {"synth": {"in": 1, "out": 1, "rejected": 0}}

    r1 = out["r1"]
    assert json.loads(r1["tasks"]) == []
    (u,) = json.loads(r1["task_rejects"])
    assert (u["stage"], u["reason"], u["text"]) == ("synth", "unparseable", "lorem ipsum <|eot_id|>")
    assert json.loads(r1["counts"]) == {"synth": {"in": 1, "out": 0, "rejected": 1}}

    r2 = out["r2"]
    (t,) = json.loads(r2["task_rejects"])
    assert t["reason"] == "too_long" and r2["synth_text"] == "" and r2["n_prompt_tokens"] > 199
    assert json.loads(r2["counts"]) == {"synth": {"in": 1, "out": 0, "rejected": 1}}

    r3 = out["r3"]
    assert r3["counts"] == "{}" and r3["tasks"] == "[]" and r3["synth_text"] == ""  # schema filled, not processed
    assert json.loads(out["r4"]["task_rejects"])[0]["reason"] == "unreadable_image"

    for r in out.values():  # the image flows on with its caption task: no synth row-level reject
        assert r["reject_stage"] in ("", "ingest") and r["image"]
    recs = [rec for r in out.values() for rec in reject_records(r)]
    assert sorted(rec["reason"] for rec in recs if rec["stage"] == "synth") == [
        "too_long", "unpaired", "unpaired", "unparseable", "unreadable_image"
    ]


def test_ray_options():
    pytest.importorskip("ray")
    cfg = RunConfig.model_validate({"synth": {"replicas": 3, "batch_size": 7, "device": "cpu", "num_cpus": 2}})
    opts = SynthStage.ray_options(cfg.synth)
    assert opts["batch_size"] == 7 and opts["num_cpus"] == 2 and "num_gpus" not in opts
    assert opts["compute"].min_size == opts["compute"].max_size == 3
    cfg = RunConfig.model_validate({"synth": {"device": "cuda", "tensor_parallel_size": 2}})
    opts = SynthStage.ray_options(cfg.synth)
    assert opts["num_gpus"] == 2 and "num_cpus" not in opts


def _tiny_rows() -> list[dict]:
    return [
        _row(0, "A red square on white."),
        {**_row(1, "A blue bar."), "image": _png((10, 10, 200), (500, 300))},  # downscaled to max_pixels
        _row(2, "An extremely long caption. " * 40),
    ]


def _check_tiny(out: list[dict], max_tokens: int) -> None:
    r0, r1, r2 = out
    assert json.loads(r2["task_rejects"])[0]["reason"] == "too_long" and r2["synth_text"] == ""
    for r in (r0, r1):
        assert r["synth_text"] and 0 < r["n_output_tokens"] <= max_tokens and r["n_prompt_tokens"] > 0
        c = json.loads(r["counts"])["synth"]
        assert c["in"] == 1 and c["out"] + c["rejected"] == 1
        reasons = [x["reason"] for x in json.loads(r["task_rejects"])]
        # The random tiny model writes no pairs: its output must be rejected as unparseable, text kept.
        assert (c["out"] == 1) or ("unparseable" in reasons)
        if c["out"] == 0:
            assert any(x.get("text") == r["synth_text"] for x in json.loads(r["task_rejects"]))


def test_tiny_vlm_transformers(tiny_vlm_path):
    cfg = load_config("biomed", "tiny", [f"synth.model={tiny_vlm_path}", "synth.engine=transformers", "synth.max_tokens=16",
                                         "synth.max_model_len=128"])
    stage = SynthStage(cfg.synth, cfg.input.max_image_pixels)
    out = _run(stage, _tiny_rows())
    _check_tiny(out, 16)
    (img,) = stage._request(_tiny_rows()[1]).images
    assert img.width * img.height <= cfg.synth.max_pixels and img.width > img.height  # resized, aspect kept


@pytest.mark.vllm
def test_tiny_vlm_vllm(tiny_vlm_path):
    cfg = load_config("biomed", "tiny", [f"synth.model={tiny_vlm_path}", "synth.max_tokens=16", "synth.max_model_len=128"])
    stage = SynthStage(cfg.synth, cfg.input.max_image_pixels)
    try:
        _check_tiny(_run(stage, _tiny_rows()), 16)
    finally:
        stage.close()
