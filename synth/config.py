"""Configuration of the synthesis stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.resources import EngineResources


class SynthConfig(EngineResources):
    model: str = Field(
        "AdaptLLM/visual-instruction-synthesizer",
        description="Synthesizer: hub id or local path (the CLI also resolves built-in references such as tiny://vlm).",
    )
    preset: str = Field(
        "llava_llama3",
        description="Prompt preset (synth/prompts/<preset>.yaml): chat format, hints, turn separators, stop strings.",
    )
    engine: Literal["vllm", "transformers"] = Field(
        "vllm", description="Generation backend. 'transformers' is for machines without vLLM."
    )
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy (published default).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (ignored when greedy).")
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per image (published default 512).")
    seed: int = Field(0, description="Sampling seed.")
    use_source_prompt: bool = Field(
        False,
        description=(
            "Ask the caption turn with the row's user_prompt instead of the preset's caption hint "
            "('Describe the image.', what the published synthesizer was trained on)."
        ),
    )
    max_model_len: int = Field(4096, ge=64, description="Engine context length; longer prompts are rejected as too_long.")
    max_triplets: int | None = Field(
        None, ge=1,
        description="Keep at most this many triplets per image, those whose precise/informative pair completes first "
        "(1 = the reference filter, which judges one per image); the rest go to task_rejects as over_max_triplets. "
        "None keeps every pair.",
    )
    max_pixels: int = Field(
        336 * 336 * 4, ge=64, description="Images above this many pixels are downscaled (aspect kept) before the engine."
    )
