"""Configuration of evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.configbase import Section
from pipelines.core.resources import EngineResources


class EvalConfig(Section):
    enabled: bool = Field(False, description="Run evaluation when the 'eval' stage is selected.")
    tasks: list[str] = Field(default_factory=list, description="Benchmark task names (see posttrain/eval/tasks).")
    data_dir: str | None = Field(None, description="Folder holding the benchmarks in their published layouts.")
    engine: Literal["vllm", "transformers"] = Field("vllm", description="Generation backend for evaluation.")
    prompt_style: Literal["project", "adamllm"] = Field(
        "project",
        description="Task prompts: 'project' (posttrain/eval/prompts/*.txt with answer-format hints) or 'adamllm' "
        "(the AdaMLLM benchmark's input format: PMC-VQA 'Question: ... The choices are: (A) ...', VQA questions "
        "as they are), to compare with the paper's tables.",
    )
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per answer (greedy decoding).")
    batch_size: int = Field(32, ge=1, description="Prompts per generation call.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many examples per task.")
    split: str = Field("test", description="Benchmark split to evaluate.")
    max_model_len: int = Field(4096, ge=64, description="Engine context length; longer prompts are rejected as too_long.")
    resources: EngineResources = Field(
        default_factory=lambda: EngineResources(gpu_memory_utilization=0.3),
        description="Engine resources (device, dtype, memory fraction; 0.3 suits vLLM on CPU).",
    )
