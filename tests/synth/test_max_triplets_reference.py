"""Triplets per image against the reference filter: bigai-ai/QA-Synthesizer vllm_inference/utils/task.py
`consistency_filter.get_prompt` walks the parsed turns in order and collects the first instruction whose
precise and informative answers have both been seen, then stops (`break`): one triplet per image.
"""

from __future__ import annotations

import io
import json

from PIL import Image

from pipelines.config import RunConfig
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch
from pipelines.core.engines import GenResult
from synth.parse import first_completed, parse_output
from synth.prompt import load_preset, render_continuation
from synth.stage import SynthStage

LLAVA = load_preset("llava_llama3")
TURNS = [("precise", "Q1?", "a1"), ("precise", "Q2?", "a2"), ("informative", "Q2?", "Long a2."),
         ("informative", "Q1?", "Long a1."), ("precise", "Q3?", "a3"), ("informative", "Q3?", "Long a3.")]


def reference_collect(turns):
    """The reference loop over (hint, question, answer) turns; returns the one collected triplet."""
    precise, informative = {}, {}
    for kind, q, a in turns:
        if kind == "precise":
            if q in informative:
                return {"instruction": q, "precise": a, "informative": informative[q]}
            precise[q] = a
        else:
            if q in precise:
                return {"instruction": q, "precise": precise[q], "informative": a}
            informative[q] = a
    return None


def test_first_completed_pair_is_the_reference_choice():
    parsed = parse_output(render_continuation(LLAVA, TURNS), LLAVA, finished=True)
    assert [t["instruction"] for t in parsed.triplets] == ["Q1?", "Q2?", "Q3?"]  # parse order: first seen
    kept, over = first_completed(parsed, 1)
    assert kept == [reference_collect(TURNS)] == [{"instruction": "Q2?", "precise": "a2", "informative": "Long a2."}]
    assert [t["instruction"] for t in over] == ["Q1?", "Q3?"]
    assert [t["instruction"] for t in first_completed(parsed, 2)[0]] == ["Q2?", "Q1?"]
    assert first_completed(parsed, None) == (parsed.triplets, [])


class OneOutput:
    processor = None
    tokenizer = None

    def __init__(self, text):
        self.text = text

    def count_prompt_tokens(self, req):
        return 10

    def generate(self, requests):
        return [GenResult(self.text, 10, 50, "stop") for _ in requests]

    def close(self):
        pass


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


def test_stage_keeps_one_triplet_with_max_triplets_1_and_rejects_the_rest():
    text = render_continuation(LLAVA, TURNS)
    for cap, n_kept in ((None, 3), (1, 1)):
        cfg = RunConfig.model_validate({"synth": {"preset": "llava_llama3", "max_triplets": cap}})
        row = empty_row(id="r0", source_id="t#0", image=_png(), caption="cap", user_prompt="Describe.")
        (out,) = batch_to_rows(SynthStage(cfg.synth, cfg.input.max_image_pixels, engine=OneOutput(text))(rows_to_batch([row])))
        tasks = json.loads(out["tasks"])
        assert len(tasks) == n_kept
        over = [r for r in json.loads(out["task_rejects"]) if r["reason"] == "over_max_triplets"]
        assert len(over) == 3 - n_kept
        if cap == 1:
            assert tasks == [reference_collect(TURNS)] and {r["instruction"] for r in over} == {"Q1?", "Q3?"}
