"""Configuration of the synthesis stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.configbase import Section


class EngineResources(Section):
    engine: Literal["vllm", "transformers"] = Field(
        "vllm", description="Generation backend: 'vllm', or 'transformers' for machines without vLLM."
    )
    replicas: int = Field(1, ge=1, description="Actor pool size: engine replicas running in parallel.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine replica (vLLM tensor parallelism).")
    batch_size: int = Field(32, ge=1, description="Rows per map_batches call sent to one engine.")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica (Ray resource).")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="Where engines run: 'auto' uses CUDA when torch sees a GPU, else CPU."
    )
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="vLLM memory fraction for weights + KV cache (on CPU: fraction of the NUMA node's RAM).",
    )
    dtype: str = Field("auto", description="Model dtype passed to the engine ('auto', 'bfloat16', 'float32', ...).")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own Python code. Off by default.")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs / compilation in vLLM (faster start, slower run).")


class SynthConfig(EngineResources):
    model: str = Field(
        "AdaptLLM/visual-instruction-synthesizer",
        description="Synthesizer: hub id, local path, tiny://vlm (offline untrained) or miniworld://synthesizer.",
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
