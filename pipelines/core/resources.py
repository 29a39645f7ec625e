"""Where and how an inference engine runs: the config section every engine-owning stage extends."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.configbase import Section


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
