"""CLI and the whole eval path on the tiny eval set: tiny set -> run (tiny VLM) -> score -> report."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from pipelines.eval_cli import main
from posttrain.eval.runner import read_jsonl, write_jsonl
from posttrain.eval.tasks import get_task
from pipelines.fixtures.tiny_eval import build_tiny_eval


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    # The result JSON is the last thing on stdout (engines may log there before it).
    start = 0 if cap.out.startswith("{") else cap.out.rfind("\n{\n") + 1
    return rc, json.loads(cap.out[start:]) if rc == 0 else None, cap.err


@pytest.mark.parametrize(
    "argv",
    [
        ["score", "--task", "nope", "--pred", "x", "--ref", "y"],
        ["score", "--task", "slake", "--pred", "/nonexistent.jsonl", "--ref", "y"],
        ["run", "--task", "slake", "--model", "tiny://vlm", "--data", "/nonexistent", "--out", "o.jsonl"],
        ["run", "--task", "nope", "--model", "tiny://vlm", "--data", ".", "--out", "o.jsonl"],
        ["report", "--result", "no-equals-sign", "--out", "rep"],
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1


def test_malformed_pred_file_exits_2(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text("{broken\n")
    write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "answer": "yes", "answer_type": "closed"}])
    rc, _, err = run_cli(capsys, "score", "--task", "slake", "--pred", str(tmp_path / "p.jsonl"),
                         "--ref", str(tmp_path / "r.jsonl"))
    assert rc == 2 and "p.jsonl:1" in err


def test_tiny_eval_answers_follow_from_attributes(tmp_path):
    paths = build_tiny_eval(tmp_path, n=6, seed=3)
    meta = [json.loads(line) for line in (tmp_path / "sample/metadata.jsonl").read_text().splitlines()]
    by_img = {m["image"].split("/")[-1]: m["attributes"] for m in meta}
    slake = json.loads((paths["slake"] / "test.json").read_text())
    assert {e["answer_type"] for e in slake} == {"OPEN", "CLOSED"}
    for e in slake:
        a = by_img[e["img_name"]]
        if e["question"].startswith("What imaging modality"):
            assert e["answer"] == a["modality"]
        if e["question"].startswith("Are there any abnormal"):
            assert e["answer"] == ("Yes" if a["count"] else "No")
        m = re.match(r"Is there an? (.+) in this image\?", e["question"])
        if m:
            assert e["answer"] == ("Yes" if m.group(1) in {f["kind"] for f in a["findings"]} else "No")
    pmc = get_task("pmc_vqa").load(paths["pmc_vqa"])
    assert not pmc.rejects and len({e.id for e in pmc.examples}) == len(pmc.examples)
    for e in pmc.examples:
        if e.question.startswith("How many"):
            assert len(e.choices) == 4
    # the same seed gives the same set
    again = build_tiny_eval(tmp_path / "again", n=6, seed=3)
    assert (again["slake"] / "test.json").read_text() == (paths["slake"] / "test.json").read_text()


def _closed_ok(pred: str, answer: str) -> bool:
    """Independent yes/no check: first whole word yes/no."""
    words = [w for w in re.findall(r"[a-z]+", (pred or "").lower()) if w in ("yes", "no")]
    return bool(words) and words[0] == answer.lower()


def _recall(pred: str, answer: str) -> float:
    norm = lambda s: [w for w in re.sub(r"[^\w\s]", " ", (s or "").lower()).split() if w not in ("a", "an", "the")]
    gold, got = Counter(norm(answer)), Counter(norm(pred))
    return sum(min(c, got[w]) for w, c in gold.items()) / sum(gold.values())


def test_whole_eval_path_with_tiny_vlm(tmp_path, capsys, tiny_vlm_path):
    paths = build_tiny_eval(tmp_path / "data", n=3, seed=0)
    scores = {}
    for task in ("slake", "pmc_vqa"):
        pred = tmp_path / f"{task}.jsonl"
        rc, out, err = run_cli(capsys, "run", "--task", task, "--model", "tiny://vlm", "--data", str(paths[task]),
                               "--out", str(pred), "--engine", "transformers", "--max-tokens", "6")
        assert rc == 0, err
        recs = read_jsonl(pred)
        refs = read_jsonl(out["refs"])
        assert out["n"] == len(recs) == len(refs) > 0
        assert all(isinstance(r["prediction"], str) for r in recs)
        rc, result, err = run_cli(capsys, "score", "--task", task, "--pred", str(pred), "--ref", out["refs"],
                                  "--out", str(tmp_path / f"{task}.score.json"))
        assert rc == 0, err
        assert result["n"] == len(refs) and result["n_missing"] == 0
        scores[task] = (recs, result)

    recs, result = scores["slake"]
    closed = [r for r in recs if r["answer_type"] == "closed"]
    opened = [r for r in recs if r["answer_type"] == "open"]
    assert result["metrics"]["closed_accuracy"] == pytest.approx(
        sum(_closed_ok(r["prediction"], r["answer"]) for r in closed) / len(closed))
    assert result["metrics"]["open_recall"] == pytest.approx(
        sum(_recall(r["prediction"], r["answer"]) for r in opened) / len(opened))

    # Doctor the saved predictions: every closed one answered right, so the score must say so.
    fixed = [{**r, "prediction": f"{r['answer']}, I think." if r["answer_type"] == "closed" else r["prediction"]}
             for r in recs]
    write_jsonl(tmp_path / "fixed.jsonl", fixed)
    rc, result, _ = run_cli(capsys, "score", "--task", "slake", "--pred", str(tmp_path / "fixed.jsonl"),
                            "--ref", str(tmp_path / "slake.jsonl.refs.jsonl"))
    assert result["metrics"]["closed_accuracy"] == 1.0

    recs, result = scores["pmc_vqa"]
    letters = [r for r in recs if re.fullmatch(r"\s*\(?[A-D]\)?\.?\s*", r["prediction"])]
    assert result["metrics"]["unparsed"] <= len(recs) - len(letters)
    doctored = [{**r, "prediction": f"The answer is {r['answer']}" if i % 2 == 0 else "no idea"}
                for i, r in enumerate(recs)]
    write_jsonl(tmp_path / "doc.jsonl", doctored)
    rc, result, _ = run_cli(capsys, "score", "--task", "pmc_vqa", "--pred", str(tmp_path / "doc.jsonl"),
                            "--ref", str(tmp_path / "pmc_vqa.jsonl.refs.jsonl"))
    n_right = (len(recs) + 1) // 2
    assert result["metrics"] == {"accuracy": pytest.approx(n_right / len(recs)), "unparsed": len(recs) - n_right}

    rc, out, err = run_cli(capsys, "report", "--result", f"base={tmp_path / 'slake.score.json'}",
                           "--result", f"base={tmp_path / 'pmc_vqa.score.json'}",
                           "--result", f"adapted={tmp_path / 'slake.score.json'}", "--out", str(tmp_path / "rep"))
    assert rc == 0, err
    md = (tmp_path / "rep/report.md").read_text()
    assert "| slake | closed_accuracy |" in md and "| pmc_vqa | accuracy |" in md
    assert (tmp_path / "rep/report.png").stat().st_size > 0 and (tmp_path / "rep/report.html").exists()


@pytest.mark.vllm
def test_run_with_vllm_engine(tmp_path, capsys, tiny_vlm_path):
    """The default engine: vLLM (CPU here) on the tiny set, predictions for every example."""
    paths = build_tiny_eval(tmp_path / "data", n=2, seed=1)
    pred = tmp_path / "p.jsonl"
    rc, out, err = run_cli(capsys, "run", "--task", "pmc_vqa", "--model", "tiny://vlm", "--data",
                           str(paths["pmc_vqa"]), "--out", str(pred), "--max-tokens", "4",
                           "--max-model-len", "512", "--gpu-memory-utilization", "0.3")
    assert rc == 0, err
    recs = read_jsonl(pred)
    assert len(recs) == out["n"] > 0 and all(isinstance(r["prediction"], str) for r in recs)
    assert all(r["n_prompt_tokens"] > 4 for r in recs)
