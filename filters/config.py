"""Configuration of the consistency judge, answer composition and mixing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.configbase import Section
from pipelines.core.resources import EngineResources


class JudgeConfig(EngineResources):
    model: str = Field(
        "meta-llama/Meta-Llama-3-8B",
        description="Text LLM judge: hub id or local path (the CLI also resolves built-in references such as tiny://judge).",
    )
    engine: Literal["vllm", "transformers"] = Field("vllm", description="Judge backend.")
    prompt: str = Field(
        "adamllm_consistency",
        description="Few-shot prompt: a built-in name (filters/prompts/<name>.txt: adamllm_consistency, the paper's "
        "structure; consistency_v1, this project's rewrite), package:file.txt, or a path (the reference repository's "
        "consistency_filter_prompt.txt is read as it is).",
    )
    keep_labels: list[Literal["yes", "no", "open"]] = Field(
        default_factory=lambda: ["yes"], description="Labels whose tasks are kept (paper: yes only)."
    )
    enable_prefix_caching: bool = Field(True, description="Reuse the KV cache of the shared few-shot prefix.")
    max_model_len: int = Field(8192, ge=64, description="Judge context length; longer items are rejected as too_long.")
    batch_size: int = Field(64, ge=1, description="Triplet-bearing rows per judge call.")


class ComposeConfig(Section):
    mode: Literal["combined", "precise", "informative", "unfiltered"] = Field(
        "combined",
        description=(
            "Training answer: 'combined' (informative, informative+precise or chain-of-thought, the default), "
            "'precise', 'informative', or 'unfiltered' (combined answers without the judge filter)."
        ),
    )
    form_rule: Literal["indicator_words", "last_sentence"] = Field(
        "indicator_words",
        description=(
            "How a combined answer picks its form: 'indicator_words' (the reference rule: so/thus/therefore/"
            "answer/result/final/could be in the informative answer's last sentence, then in the precise answer) "
            "or 'last_sentence' (the informative answer's last sentence contains the precise answer)."
        ),
    )


class MixConfig(Section):
    strategy: Literal["single_stage", "synthetic_only", "caption_only", "two_stage"] = Field(
        "single_stage",
        description="How caption and synthetic tasks form conversations; two_stage exports captions then synthetic.",
    )
    caption_position: Literal["random", "first", "last"] = Field(
        "random", description="Where the caption turn goes in a mixed conversation (random is seeded by id)."
    )
    general_input: str | None = Field(None, description="Optional general (non-domain) conversations to mix in.")
    general_fraction: float = Field(0.0, ge=0, le=1, description="Fraction of general rows relative to domain rows.")
    seed: int = Field(0, description="Seed for every random choice in mixing (combined with the row id).")
