"""Runner: prompts, batching, rejects that keep their line, id joins when scoring, JSONL files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from posttrain.eval.examples import Example
from posttrain.eval.runner import chat_renderer, predict, read_jsonl, score, write_jsonl
from posttrain.eval.tasks import get_task
from pipelines.core.engines import GenResult


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


class FakeEngine:
    """Answers 'B' to prompts mentioning 'organ', else 'yes'; prompt length = number of characters."""

    def __init__(self):
        self.calls: list[int] = []

    def count_prompt_tokens(self, req):
        return len(req.prompt)

    def generate(self, requests):
        self.calls.append(len(requests))
        for r in requests:
            assert len(r.images) == 1 and r.images[0].mode == "RGB"
        return [GenResult(text=" B " if "organ" in r.prompt else "yes", n_prompt_tokens=len(r.prompt),
                          n_output_tokens=1, finish_reason="stop") for r in requests]


def chat(text: str) -> str:
    return f"<U>{text}<A>"


def examples() -> list[Example]:
    return [
        Example("q1", png(), "Which organ?", "B", "choice", ["liver", "lung"]),
        Example("q2", b"not an image", "Which organ?", "A", "choice", ["liver", "lung"]),
        Example("q3", png(), "Which organ? " + "long " * 50, "A", "choice", ["liver", "lung"]),
        Example("q4", Image.new("L", (4, 4)), "Which organ?", "A", "choice", ["liver", "lung"]),
    ]


def test_predict_keeps_every_example_and_order():
    eng = FakeEngine()
    recs = predict(get_task("pmc_vqa"), examples(), eng, chat, batch_size=3, max_model_len=150, max_tokens=4)
    assert [r["id"] for r in recs] == ["q1", "q2", "q3", "q4"]
    assert [r["prediction"] for r in recs] == ["B", None, None, "B"]
    assert [r["reject_reason"] for r in recs] == ["", "unreadable_image", "too_long", ""]
    assert recs[1]["reject_stage"] == "eval_run"
    assert eng.calls == [1, 1]  # two batches, rejected examples never reach the engine
    assert recs[0]["n_prompt_tokens"] > 0 and recs[0]["task"] == "pmc_vqa"
    result = score("pmc_vqa", recs, [e.ref() for e in examples()])
    assert result["metrics"]["accuracy"] == 0.25  # q1 right, q4 wrong, rejects wrong
    assert result["n_rejected"] == 2 and result["n_missing"] == 0


def test_predict_rejects_duplicate_ids():
    ex = examples()[:1] * 2
    with pytest.raises(ValueError, match="duplicate"):
        predict(get_task("pmc_vqa"), ex, FakeEngine(), chat)


def test_prompt_goes_through_template_and_chat():
    eng = FakeEngine()
    seen = []
    orig = eng.generate
    eng.generate = lambda reqs: seen.extend(r.prompt for r in reqs) or orig(reqs)
    predict(get_task("pmc_vqa"), examples()[:1], eng, chat)
    assert seen == ["<U>Which organ?\nA. liver\nB. lung\nAnswer with the option's letter from the given "
                    "choices directly.<A>"]


def test_chat_renderer_uses_processor_template():
    class Proc:
        chat_template = "x"

        def apply_chat_template(self, msgs, add_generation_prompt, tokenize):
            assert add_generation_prompt and not tokenize
            parts = msgs[0]["content"]
            return "User:" + "".join("<image>" if p["type"] == "image" else p["text"] for p in parts) + "\nAssistant:"

    assert chat_renderer(Proc())("Hi?") == "User:<image>Hi?\nAssistant:"
    with pytest.raises(ValueError, match="chat template"):
        chat_renderer(None)


def test_score_joins_by_id():
    refs = [{"id": "a", "answer": "yes", "answer_type": "closed"},
            {"id": "b", "answer": "no", "answer_type": "closed"},
            {"id": "c", "answer": "liver", "answer_type": "open"}]
    preds = [{"id": "b", "prediction": "No."}, {"id": "a", "prediction": "no"}, {"id": "zz", "prediction": "x"}]
    out = score("slake", preds, refs)
    assert out["metrics"] == {"closed_accuracy": 0.5, "open_recall": 0.0}
    assert (out["n_missing"], out["n_unexpected"], out["n_rejected"], out["n"]) == (1, 1, 0, 3)
    with pytest.raises(ValueError, match="duplicate"):
        score("slake", preds + preds[:1], refs)


def test_jsonl_roundtrip_and_errors(tmp_path):
    recs = [{"id": "1", "prediction": "é"}, {"id": "2", "prediction": None}]
    p = write_jsonl(tmp_path / "sub/p.jsonl", recs)
    assert read_jsonl(p) == recs
    assert not list(tmp_path.glob("sub/*.tmp"))
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(tmp_path / "bad.jsonl")
