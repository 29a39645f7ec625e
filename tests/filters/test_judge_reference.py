"""Consistency-judge prompts against the reference: bigai-ai/QA-Synthesizer
vllm_inference/utils/consistency_filter_prompt.txt (the paper's Figure 6-7 prompt) and
vllm_inference/utils/task.py `consistency_filter.get_prompt`, which fills the file with
`prompt_template.format(Q=..., informative_A=..., precise_A=...)` and keeps a task when the generated
text, stripped and lower-cased, is 'yes' (process/syn_utils.py `cook_classified_entry`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from filters.judge import (
    CHOICES,
    ConsistencyJudge,
    check_template,
    load_prompt,
    render,
    shared_prefix,
)
from pipelines.config import RunConfig, load_config
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch
from pipelines.core.engines import GenResult

FIXTURE = Path(__file__).parent / "fixtures" / "reference_format_judge_prompt.txt"
ITEM = {"instruction": "How many nodules are there?", "informative": "I count two nodules. So there are two.",
        "precise": "Three"}


def reference_fill(template_text: str, q: str, informative: str, precise: str) -> str:
    """What the reference sends to the judge: the file read as is, then str.format on the collected QA."""
    return template_text.format(Q=q, informative_A=informative, precise_A=precise)


def test_reference_format_file_is_accepted_as_is_and_filled_like_the_reference():
    raw = FIXTURE.read_text(encoding="utf-8")
    tpl = load_prompt(str(FIXTURE))
    out = render(tpl, ITEM["instruction"], ITEM["informative"], ITEM["precise"])
    assert out == reference_fill(raw, ITEM["instruction"], ITEM["informative"], ITEM["precise"])
    # str.format semantics of the reference: {{ }} become braces, literal backslash sequences stay as they are
    assert '\\"{closed}\\"' in out and "Question: Is it raining?\\nPlease" in out
    assert out.endswith("## Precise Answer: Three\n## Consistent:")
    assert shared_prefix(tpl) == reference_fill(raw, "", "", "").split("## Question: \n")[0] + "## Question: "


def test_item_text_with_braces_is_not_re_substituted():
    tpl = load_prompt(str(FIXTURE))
    out = render(tpl, "What is {precise_A}?", "a {{b}}", "c")
    assert out.endswith("## Question: What is {precise_A}?\n## Informative Answer: a {{b}}\n"
                        "## Precise Answer: c\n## Consistent:")


def test_reference_format_validation(tmp_path):
    with pytest.raises(ValueError, match="single brace"):
        check_template("x { y\n## Question: {Q}\n{informative_A}\n{precise_A}\n## Consistent:")
    with pytest.raises(ValueError, match="mixes placeholder styles"):
        check_template("{Q} {informative_A} {precise_A} {precise}\n## Consistent:")
    with pytest.raises(ValueError, match="exactly once"):
        check_template("{Q} {informative_A}\n## Consistent:")
    with pytest.raises(ValueError, match="answer cue"):
        check_template("{Q} {informative_A} {precise_A}")


class CueEngine:
    """Scripted judge: answers by a keyword of the item; records the prompts it was given."""

    def __init__(self):
        self.prompts: list[str] = []
        self.tokenizer = lambda text, add_special_tokens=True: {"input_ids": text.split()}

    def count_prompt_tokens(self, req):
        return len(req.prompt.split())

    def generate(self, requests):
        out = []
        for r in requests:
            assert r.choices == list(CHOICES)
            self.prompts.append(r.prompt)
            item = r.prompt.rsplit("## Question:", 1)[1]
            text = " Yes" if "color" in item else " No"
            out.append(GenResult(text=text, n_prompt_tokens=0, n_output_tokens=1, finish_reason="stop",
                                 choice_logprob=math.log(0.8)))
        return out

    def close(self):
        pass


def test_judge_stage_runs_on_a_reference_format_prompt_and_keeps_what_the_reference_keeps():
    eng = CueEngine()
    cfg = RunConfig.model_validate({"judge": {"prompt": str(FIXTURE), "max_model_len": 4096}})
    tasks = [{"instruction": "What color is it?", "informative": "It is brown.", "precise": "Brown"}, ITEM]
    row = empty_row(id="a", tasks=json.dumps(tasks))
    (out,) = batch_to_rows(ConsistencyJudge(cfg.judge, filter_tasks=cfg.compose.mode != "unfiltered", engine=eng)(rows_to_batch([row])))
    raw = FIXTURE.read_text(encoding="utf-8")
    assert eng.prompts == [reference_fill(raw, t["instruction"], t["informative"], t["precise"]) for t in tasks]
    # reference keep rule: generated text stripped and lower-cased == 'yes'
    kept = [t for t, text in zip(tasks, (" Yes", " No"), strict=True) if text.strip().lower() == "yes"]
    assert [t["instruction"] for t in json.loads(out["tasks"])] == [t["instruction"] for t in kept]
    assert [r["reason"] for r in json.loads(out["task_rejects"])] == ["judge_no"]


def test_published_configs_default_to_the_paper_structured_prompt():
    """Structure of the reference file: task statement, the three label definitions, six general-domain
    demonstrations labelled No, Open, Yes, Yes, No, Open, then the query block ending in '## Consistent:'."""
    for domain in ("biomed", "food"):
        assert load_config(domain).judge.prompt == "adamllm_consistency"
    text = load_prompt("adamllm_consistency")
    for label in ("Yes", "No", "Open"):
        assert re.search(rf"^- {label}: \S", text, re.MULTILINE), label
    demos = re.findall(r"^## Question: .+\n## Informative Answer: .+\n## Precise Answer: .+\n## Consistent: (\w+)$",
                       text, re.MULTILINE)
    assert demos == ["No", "Open", "Yes", "Yes", "No", "Open"]
    assert text.splitlines()[-4:] == ["## Question: {Q}", "## Informative Answer: {informative_A}",
                                      "## Precise Answer: {precise_A}", "## Consistent:"]
    assert "{" not in shared_prefix(text) and text.index("## Question:") > 0
    # the project's rewritten prompt stays available by name
    assert load_prompt("consistency_v1").endswith("Label:")
