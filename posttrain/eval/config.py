"""Configuration of evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.configbase import Section


class EvalConfig(Section):
    enabled: bool = Field(False, description="Run evaluation when the 'eval' stage is selected.")
    tasks: list[str] = Field(default_factory=list, description="Benchmark task names (see posttrain/eval/tasks).")
    data_dir: str | None = Field(None, description="Folder holding the benchmarks in their published layouts.")
    engine: Literal["vllm", "transformers"] = Field("vllm", description="Generation backend for evaluation.")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per answer (greedy decoding).")
    batch_size: int = Field(32, ge=1, description="Prompts per generation call.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many examples per task.")
