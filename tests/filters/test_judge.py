"""Consistency judge: prompt file structure, keep/reject decisions, and a run on the real tiny judge engine."""

from __future__ import annotations

import json
import math
import re
from importlib import resources

import pytest

from filters.judge import (
    CHOICES,
    LABELS,
    ConsistencyJudge,
    check_template,
    load_prompt,
    render,
    shared_prefix,
)
from pipelines.config import RunConfig
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch
from pipelines.core.engines import GenResult

TASKS = [
    {"instruction": "What color is the stain?", "informative": "The cytoplasm is brown.", "precise": "Brown"},
    {"instruction": "How many nodules are there?", "informative": "I see two nodules.", "precise": "Three"},
    {"instruction": "Describe the image.", "informative": "A bowl of soup with noodles.", "precise": "Soup"},
]

# -- the prompt file ----------------------------------------------------------------------------


def test_prompt_file_structure():
    text = (resources.files("filters") / "prompts" / "consistency_v1.txt").read_text()
    for label in ("Yes", "No", "Open"):
        assert re.search(rf"^{label}: \S", text, re.M), f"label {label} is not defined"
        assert len(re.findall(rf"^Label: {label}$", text, re.M)) == 2, f"need two {label} examples"
    examples = re.findall(r"^Example \d+\nInstruction: .+\nInformative answer: .+\nPrecise answer: .+\nLabel: \w+$",
                          text, re.M)
    assert len(examples) == 6
    tail = text.rstrip().splitlines()[-4:]
    assert tail == ["Instruction: {instruction}", "Informative answer: {informative}",
                    "Precise answer: {precise}", "Label:"]
    assert "{" not in shared_prefix(load_prompt("consistency_v1"))


def test_render_fills_each_placeholder_once():
    tpl = load_prompt("consistency_v1")
    out = render(tpl, "Q {precise}?", " informative text ", "P")
    assert out.startswith(shared_prefix(tpl))
    assert out.endswith("Instruction: Q {precise}?\nInformative answer: informative text\nPrecise answer: P\nLabel:")


def test_prompt_override_file_and_validation(tmp_path):
    good = tmp_path / "domain.txt"
    good.write_text("Few shot.\nI: {instruction}\nA: {informative}\nP: {precise}\nLabel:\n")
    assert load_prompt(str(good)).endswith("Label:")
    with pytest.raises(ValueError, match="exactly once"):
        check_template("{instruction} {precise} Label:")
    with pytest.raises(ValueError, match="end with"):
        check_template("{instruction} {informative} {precise}")
    with pytest.raises(FileNotFoundError, match="built-ins are"):
        load_prompt("no_such_prompt")


def test_prompt_from_a_package_file():
    text = load_prompt("pipelines.experiments.miniworld:judge_prompt.txt")
    assert text.endswith("Label:") and "{precise}" in text
    with pytest.raises(FileNotFoundError, match="no package"):
        load_prompt("no_such_package:judge.txt")
    with pytest.raises(FileNotFoundError, match="has no file"):
        load_prompt("pipelines.experiments.miniworld:missing.txt")


# -- decisions, with a scripted engine (fast) ----------------------------------------------------


class ScriptedEngine:
    """Whitespace 'tokenizer'; answers a fixed label per instruction keyword with a fixed log-prob."""

    def __init__(self, answers: dict[str, tuple[str, float]]):
        self.answers = answers
        self.calls: list[int] = []
        self.tokenizer = lambda text, add_special_tokens=True: {"input_ids": text.split()}

    def count_prompt_tokens(self, req):
        return len(req.prompt.split())

    def generate(self, requests):
        self.calls.append(len(requests))
        out = []
        for r in requests:
            assert r.choices == list(CHOICES)
            item = r.prompt.rsplit("Instruction:", 1)[1]
            text, lp = next(v for k, v in self.answers.items() if k in item)
            out.append(GenResult(text=text, n_prompt_tokens=0, n_output_tokens=1, finish_reason="stop",
                                 choice_logprob=lp))
        return out

    def close(self):
        pass


SCRIPT = {"color": ("Yes", math.log(0.9)), "nodules": ("No", math.log(0.6)), "Describe": (" Open ", math.log(0.5))}


def _judge(engine, **over):
    data = {"judge": {"max_model_len": 2048, "prompt": "consistency_v1", **over.pop("judge", {})}, **over}
    cfg = RunConfig.model_validate(data)
    return ConsistencyJudge(cfg.judge, filter_tasks=cfg.compose.mode != "unfiltered", engine=engine)


def _run(judge, rows):
    return batch_to_rows(judge(rows_to_batch(rows)))


def test_keeps_yes_and_rejects_no_and_open_with_label_and_score():
    eng = ScriptedEngine(SCRIPT)
    rows = [empty_row(id="a", tasks=json.dumps(TASKS)), empty_row(id="b", tasks=json.dumps(TASKS[:1]))]
    a, b = _run(_judge(eng), rows)
    assert eng.calls == [4]  # one engine call for the whole batch
    (kept,) = json.loads(a["tasks"])
    assert kept["label"] == "yes" and kept["score"] == pytest.approx(0.9) and kept["precise"] == "Brown"
    rej = json.loads(a["task_rejects"])
    assert [(r["stage"], r["reason"], r["label"]) for r in rej] == [("judge", "judge_no", "no"),
                                                                   ("judge", "judge_open", "open")]
    assert [r["score"] for r in rej] == pytest.approx([0.6, 0.5])
    assert rej[0]["informative"] == "I see two nodules."
    assert json.loads(a["counts"])["judge"] == {"in": 3, "out": 1, "rejected": 2}
    assert json.loads(b["counts"])["judge"] == {"in": 1, "out": 1, "rejected": 0}


def test_keep_labels_from_config():
    (a,) = _run(_judge(ScriptedEngine(SCRIPT), judge={"keep_labels": ["yes", "open"]}),
                [empty_row(id="a", tasks=json.dumps(TASKS))])
    assert [t["label"] for t in json.loads(a["tasks"])] == ["yes", "open"]
    assert [r["reason"] for r in json.loads(a["task_rejects"])] == ["judge_no"]


def test_too_long_item_is_rejected_without_reaching_the_engine():
    eng = ScriptedEngine(SCRIPT)
    tpl_tokens = len(load_prompt("consistency_v1").split())
    long_task = {"instruction": "What color?", "informative": "word " * 3000, "precise": "Brown"}
    (a,) = _run(_judge(eng, judge={"max_model_len": tpl_tokens + 100}),
                [empty_row(id="a", tasks=json.dumps([TASKS[0], long_task]))])
    assert eng.calls == [1]
    (rej,) = json.loads(a["task_rejects"])
    assert rej["reason"] == "too_long" and "max_model_len" in rej["detail"]
    assert json.loads(a["counts"])["judge"] == {"in": 2, "out": 1, "rejected": 1}


def test_unparseable_judge_output_is_rejected():
    eng = ScriptedEngine({"color": ("Maybe", -0.1), "nodules": ("No", -1.0), "Describe": ("Open", -1.0)})
    (a,) = _run(_judge(eng), [empty_row(id="a", tasks=json.dumps(TASKS[:1]))])
    (rej,) = json.loads(a["task_rejects"])
    assert rej["reason"] == "unparseable" and "Maybe" in rej["detail"]


def test_unfiltered_mode_keeps_everything_with_labels():
    eng = ScriptedEngine(SCRIPT)
    (a,) = _run(_judge(eng, compose={"mode": "unfiltered"}), [empty_row(id="a", tasks=json.dumps(TASKS))])
    assert [t["label"] for t in json.loads(a["tasks"])] == ["yes", "no", "open"]
    assert json.loads(a["task_rejects"]) == []
    assert json.loads(a["counts"])["judge"] == {"in": 3, "out": 3, "rejected": 0}


def test_rows_without_tasks_and_rejected_rows():
    eng = ScriptedEngine(SCRIPT)
    bad = empty_row(id="x", tasks=json.dumps(TASKS), reject_stage="ingest", reject_reason="missing_image")
    empty, rejected = _run(_judge(eng), [empty_row(id="e"), bad])
    assert json.loads(empty["counts"])["judge"] == {"in": 0, "out": 0, "rejected": 0}
    assert "judge" not in json.loads(rejected["counts"]) and json.loads(rejected["tasks"]) == TASKS
    assert eng.calls == [0]


def test_ray_options_cpu():
    cfg = RunConfig.model_validate({"judge": {"replicas": 3, "device": "cpu", "num_cpus": 2, "batch_size": 7}})
    opts = ConsistencyJudge.ray_options(cfg.judge)
    assert opts["compute"].min_size == opts["compute"].max_size == 3 and opts["batch_size"] == 7 and opts["num_cpus"] == 2
    assert "num_gpus" not in opts


# -- the real engine on the tiny judge ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_judge(tiny_judge_path):
    cfg = RunConfig.model_validate({"judge": {
        "model": tiny_judge_path, "max_model_len": 2048, "gpu_memory_utilization": 0.3, "device": "cpu",
        "enforce_eager": True,  # no graph compilation: much faster engine start on CPU
    }})
    judge = ConsistencyJudge(cfg.judge)
    yield judge
    judge.close()


@pytest.mark.vllm
def test_real_engine_every_task_is_kept_or_rejected(real_judge):
    long_task = {"instruction": "What is it?", "informative": "soup " * 3000, "precise": "Soup"}
    rows = [empty_row(id="a", tasks=json.dumps(TASKS)), empty_row(id="b", tasks=json.dumps([TASKS[1], long_task])),
            empty_row(id="c")]
    out = _run(real_judge, rows)
    all_labels = []
    for row, n_tasks in zip(out, (3, 2, 0), strict=True):
        kept, rejected = json.loads(row["tasks"]), json.loads(row["task_rejects"])
        assert len(kept) + len(rejected) == n_tasks
        for t in kept:
            assert t["label"] == "yes" and 0 < t["score"] <= 1
            all_labels.append(t["label"])
        for r in rejected:
            assert r["stage"] == "judge"
            if r["reason"] == "too_long":
                assert r["informative"].startswith("soup soup")
                continue
            assert r["reason"] == f"judge_{r['label']}" and r["label"] in ("no", "open") and 0 < r["score"] <= 1
            all_labels.append(r["label"])
        c = json.loads(row["counts"])["judge"]
        assert (c["in"], c["out"], c["rejected"]) == (n_tasks, len(kept), len(rejected))
    assert len(all_labels) == 4  # every judged item got a label; only the long one did not
    assert [r["reason"] for r in json.loads(out[1]["task_rejects"])][-1] == "too_long"


@pytest.mark.vllm
def test_real_engine_is_deterministic_and_unfiltered_keeps_all(real_judge):
    cfg = RunConfig.model_validate({"judge": {"max_model_len": 2048}})
    unfiltered = ConsistencyJudge(cfg.judge, filter_tasks=False, engine=real_judge.engine)
    (a,) = _run(unfiltered, [empty_row(id="a", tasks=json.dumps(TASKS))])
    kept = json.loads(a["tasks"])
    assert len(kept) == 3 and all(t["label"] in LABELS and 0 < t["score"] <= 1 for t in kept)
    (b,) = _run(unfiltered, [empty_row(id="a", tasks=json.dumps(TASKS))])
    assert [(t["label"], round(t["score"], 5)) for t in json.loads(b["tasks"])] == \
        [(t["label"], round(t["score"], 5)) for t in kept]
