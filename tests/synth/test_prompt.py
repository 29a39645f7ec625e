"""Prompt presets: validation, the upstream LLaVA-Llama-3 format, the tiny model's chat template."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from synth.prompt import Preset, load_preset, preset_names, render_continuation, render_prompt

# Built by hand from bigai-ai/QA-Synthesizer: conv_llava_llama_3 (SeparatorStyle.MPT: system + sep, then
# role + message + sep per turn, a bare role for the open turn), image token <|reserved_special_token_4|>,
# caption_hint "Describe the image." (vllm_inference/utils/task.py, process/syn_utils.py).
UPSTREAM_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n<|reserved_special_token_4|>\nDescribe the image.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA chest X-ray.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n"
)
# syn_utils.format_qa: Q = f"{hint}\n{question}"; turns as the MPT template writes them.
UPSTREAM_TURNS = (
    "Answer with a precise response.\nIs there an effusion?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nNo<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Answer with an informative response.\nIs there an effusion?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nThe costophrenic angles are sharp.<|eot_id|>"
)


def test_presets_load_and_validate():
    assert {"llava_llama3", "tiny"} <= set(preset_names())
    for name in preset_names():
        p = load_preset(name)
        assert p.name == name
        assert p.precise_hint == "Answer with a precise response."
        assert p.informative_hint == "Answer with an informative response."
        assert p.caption_hint == "Describe the image."


def test_unknown_preset_and_bad_fields_fail():
    with pytest.raises(ValueError, match="llava_llama3"):
        load_preset("no_such_preset")
    data = load_preset("tiny").model_dump()
    with pytest.raises(ValidationError):
        Preset.model_validate({**data, "stop_words": ["x"]})
    with pytest.raises(ValidationError):
        Preset.model_validate({**data, "render": "jinja"})


def test_llava_llama3_matches_upstream_format():
    p = load_preset("llava_llama3")
    assert render_prompt(p, "A chest X-ray.") == UPSTREAM_PROMPT
    turns = [("precise", "Is there an effusion?", "No"),
             ("informative", "Is there an effusion?", "The costophrenic angles are sharp.")]
    assert render_continuation(p, turns) == UPSTREAM_TURNS
    assert p.stop == ["<|end_of_text|>"] and p.skip_special_tokens is False  # upstream syn_task_triplet


def test_source_prompt_replaces_caption_hint():
    p = load_preset("llava_llama3")
    assert "\nWhat is shown?<|eot_id|>" in render_prompt(p, "cap", "What is shown?")


def test_tiny_renders_through_the_model_chat_template(tiny_vlm_path):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_vlm_path)
    p = load_preset("tiny")
    prompt = render_prompt(p, "A red square.", processor=proc)
    assert prompt == (
        "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant: A red square.<end_of_utterance>\n"
        "User: "
    )
    # The preset's separators must agree with the chat template for the synthesized turns too.
    turns = [("precise", "What color?", "Red"), ("informative", "What color?", "It is red.")]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    ]
    for kind, q, a in turns:
        messages += [{"role": "user", "content": [{"type": "text", "text": f"{p.hint(kind)}\n{q}"}]},
                     {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    full = proc.apply_chat_template(messages, tokenize=False)
    assert prompt + render_continuation(p, turns) == full
    with pytest.raises(ValueError, match="processor"):
        render_prompt(p, "x")


def test_preset_files_are_plain_yaml():
    from importlib import resources

    for name in preset_names():
        raw = yaml.safe_load((resources.files("synth.prompts") / f"{name}.yaml").read_text())
        assert set(raw) <= set(Preset.model_fields)
