"""Synthesizer prompt presets (synth/prompts/<name>.yaml) and prompt rendering.

The synthesizer sees one conversation: the image with a caption question ("Describe the image."),
answered by the ground-truth caption, then an opened user turn. It continues by writing instruction
turns, each prefixed by a precise-answer or informative-answer hint, each followed by its answer
(AdaMLLM, arXiv 2411.19930). A preset holds the per-model-family separators, hints and stop strings;
`render: template` builds the text from them (the published LLaVA-Llama-3 synthesizer was trained on
that literal format), `render: chat_template` uses the model's own chat template for the caption
turn and the separators only for the open user turn and for parsing.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

HintKind = Literal["precise", "informative"]


class Preset(BaseModel):
    """One model family's synthesizer conversation format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(1, description="Preset format version.")
    name: str = Field(description="Preset name (the file stem).")
    description: str = Field(description="What model family this preset is for.")
    render: Literal["template", "chat_template"] = Field(
        description="'template': render from the separators; 'chat_template': the processor's chat template."
    )
    prefix: str = Field("", description="Text before the first turn (BOS, system turn); template rendering only.")
    user_start: str = Field(description="Opens a user turn (role marker).")
    user_end: str = Field(description="Closes a user turn.")
    assistant_start: str = Field(description="Opens an assistant turn (role marker).")
    assistant_end: str = Field(description="Closes an assistant turn.")
    image_token: str = Field(description="Image placeholder text in the prompt (the engine expands it).")
    caption_turn: str = Field(description="Caption question with {image} and {question} fields.")
    caption_hint: str = Field(description="Question of the caption turn.")
    precise_hint: str = Field(description="Hint before an instruction that asks for a precise answer.")
    informative_hint: str = Field(description="Hint before an instruction that asks for an informative answer.")
    hint_separator: str = Field("\n", description="Between a hint and its instruction.")
    stop: list[str] = Field(default_factory=list, description="Stop strings for generation.")
    ignore_eos: bool = Field(
        False,
        description="Keep generating past EOS: needed when the turn separator is the EOS token (Idefics3).",
    )
    skip_special_tokens: bool = Field(
        False, description="Decode special tokens away; False keeps separators that the parser needs."
    )

    def hint(self, kind: HintKind) -> str:
        return self.precise_hint if kind == "precise" else self.informative_hint


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("synth.prompts").iterdir() if p.name.endswith(".yaml"))


@lru_cache(maxsize=None)
def load_preset(name: str) -> Preset:
    """Load and validate synth/prompts/<name>.yaml (package data)."""
    res = resources.files("synth.prompts") / f"{name}.yaml"
    if not res.is_file():
        raise ValueError(f"unknown synth preset {name!r}: allowed are {preset_names()}")
    data = yaml.safe_load(res.read_text(encoding="utf-8"))
    return Preset.model_validate(data)


def caption_messages(preset: Preset, caption: str, question: str | None = None) -> list[dict[str, Any]]:
    """The caption turn as chat messages (image first, as the synthesizer was trained)."""
    q = question or preset.caption_hint
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
        {"role": "assistant", "content": [{"type": "text", "text": caption}]},
    ]


def render_prompt(preset: Preset, caption: str, question: str | None = None, processor: Any = None) -> str:
    """Prompt = caption turn answered by `caption`, then an opened user turn for the synthesizer.

    `processor` (or tokenizer) is required for `render: chat_template` presets.
    """
    if preset.render == "chat_template":
        if processor is None:
            raise ValueError(f"preset {preset.name!r} renders through the chat template: pass the processor")
        text = processor.apply_chat_template(
            caption_messages(preset, caption, question), tokenize=False, add_generation_prompt=False
        )
        return text + preset.user_start
    q = preset.caption_turn.format(image=preset.image_token, question=question or preset.caption_hint)
    return (
        preset.prefix
        + preset.user_start
        + q
        + preset.user_end
        + preset.assistant_start
        + caption
        + preset.assistant_end
        + preset.user_start
    )


def render_turn(preset: Preset, kind: HintKind, instruction: str, answer: str) -> str:
    """One synthesized instruction turn and its answer, as the synthesizer writes it (no user_start)."""
    return (
        preset.hint(kind)
        + preset.hint_separator
        + instruction
        + preset.user_end
        + preset.assistant_start
        + answer
        + preset.assistant_end
    )


def render_continuation(preset: Preset, turns: list[tuple[HintKind, str, str]]) -> str:
    """What the synthesizer should write after the prompt: turns joined by user_start (also a training target)."""
    return preset.user_start.join(render_turn(preset, k, q, a) for k, q, a in turns)
