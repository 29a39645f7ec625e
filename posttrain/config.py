"""Configuration of post-training (single-stage SFT, momentum proxy, VITask, synthesizer tuning)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.configbase import Section


class LoraSettings(Section):
    enabled: bool | None = Field(
        None, description="Train LoRA adapters (peft) instead of full weights; None: the method's default (vitask: "
        "LoRA on the language model, as in the paper; other methods: full weights)."
    )
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module name suffixes that get adapters.",
    )


class MomentumProxySettings(Section):
    num_tokens: int = Field(8, ge=1, description="Number of learnable proxy instruction embeddings.")
    momentum: float = Field(0.999, ge=0, lt=1, description="EMA momentum of the proxy used in the forward pass.")
    warmup_epochs: float = Field(
        1.0, ge=0, description="Phase 1 (warm-up) length in epochs: only the proxy trains, with its own optimizer "
        "(reference: a separate warm-up run)."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Phase 1 length in optimizer steps; overrides warmup_epochs when set."
    )
    shuffle_responses: bool = Field(True, description="Permute the delimited segments of each target every epoch.")
    delimiter: str = Field(",", min_length=1, description="Segment delimiter for response shuffling (rejoined with delimiter + space).")
    learning_rate: float | None = Field(None, gt=0, description="Learning rate of the proxy (None: train.learning_rate).")
    init: Literal["vocab", "reference_linear"] = Field(
        "vocab", description="Proxy init: embeddings of random vocabulary rows (matches the model's scale), or the "
        "reference's nn.Linear(768, .) default U(-1/sqrt(768), 1/sqrt(768))."
    )


class VITaskSettings(Section):
    tsm: str | None = Field(None, description="Task-specific model: hub id/path of an image classifier, tiny://tsm, or 'module:attr'.")
    connector: Literal["add", "append"] = Field(
        "append", description="Exemplar prompting: append the connector's output as exemplar tokens after the image "
        "(the paper's best variant, with tsm_feature=cls), or add it onto every image token."
    )
    rda_weight: float = Field(1.0, ge=0, description="Weight a of L_RDA in stage 1.")
    crt_weight: float = Field(1.0, ge=0, description="Weight b of L_CRT in stage 2.")
    stage1_epochs: float = Field(1.0, gt=0, description="Epochs of stage 1 (connector + L_van + L_EP + a*L_RDA).")
    stage2_epochs: float = Field(1.0, ge=0, description="Epochs of stage 2 (connector frozen, + b*L_CRT).")
    connector_tokens: int = Field(1, ge=1, description="Exemplar tokens the 'append' connector inserts per image.")
    tsm_feature: Literal["pooled", "cls", "mean", "logits"] = Field(
        "cls", description="TSM feature: first (CLS) token (the paper's best), classifier-head input, token mean, or class logits."
    )
    van_weight: float = Field(1.0, ge=0, description="Weight of L_van (plain next-token CE).")
    ep_weight: float = Field(1.0, ge=0, description="Weight of L_EP (next-token CE with exemplars).")
    crt_form: Literal["vocab", "binary"] = Field(
        "vocab", description="CRT per response token: -log softmax over the vocabulary of (logits own image - logits "
        "negative image) at the target (the paper's), or a two-way softplus on the target token's score."
    )
    crt_score: Literal["logit", "logprob"] = Field(
        "logprob",
        description="crt_form=binary only: target-token score compared across images, log-probability or raw logit.",
    )
    rda_direction: Literal["forward", "reverse"] = Field(
        "forward", description="RDA KL direction: KL(exemplar-prompted || plain) (the paper's, teacher detached) or "
        "KL(plain || exemplar-prompted)."
    )


class TrainConfig(Section):
    enabled: bool = Field(False, description="Run post-training when the 'train' stage is selected.")
    target: str | None = Field(
        None,
        description="Published training settings of a target model, merged under the domain config by "
        "load_config: a name in pipelines/configs/targets/ (qwen2_vl_2b, llava_next_llama3_8b, llama32_11b_vision, "
        "synthesizer_llava_next_llama3_8b) or a path to such a YAML file.",
    )
    method: Literal["sft", "momentum_proxy", "vitask", "synthesizer"] = Field(
        "sft", description="Post-training method."
    )
    model: str = Field("Qwen/Qwen2-VL-2B-Instruct", description="Target VLM: hub id or local path (the CLI also resolves built-in references such as tiny://vlm).")
    epochs: float = Field(1.0, gt=0, description="Training epochs (published default: one).")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate (published range 1e-5..2e-5).")
    lr_vision: float | None = Field(None, gt=0, description="Learning rate of the vision encoder (None: learning_rate).")
    lr_projector: float | None = Field(None, gt=0, description="Learning rate of the projector (None: learning_rate).")
    lr_language: float | None = Field(None, gt=0, description="Learning rate of the language model (None: learning_rate).")
    freeze_vision: bool | None = Field(
        None, description="Freeze the vision encoder; None: the method's default (vitask: frozen, as in the paper; "
        "other methods: trained)."
    )
    freeze_projector: bool = Field(False, description="Freeze the projector/connector.")
    freeze_language: bool = Field(False, description="Freeze the language model.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Warmup fraction of steps (published 3-10%).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps (derived when global_batch_size is set).")
    global_batch_size: int | None = Field(
        None, ge=1,
        description="Examples per optimizer step over all workers; sets grad_accum = global / (batch_size * "
        "num_workers), which must divide evenly. None: grad_accum as given.",
    )
    max_length: int = Field(4096, ge=16, description="Token limit per example; longer ones are truncated in text only, or skipped.")
    truncate_final_turn: bool = Field(
        False, description="Cut an over-long example inside its final assistant turn (text only) instead of skipping it."
    )
    dataloader_workers: int = Field(0, ge=0, description="DataLoader worker processes that encode examples.")
    keep_checkpoints: int = Field(2, ge=1, description="Most recent checkpoints kept on disk.")
    group_by_length: bool = Field(True, description="Batch examples of similar length to cut padding.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="bf16 where supported under 'auto'.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU, or CPU processes).")
    use_gpu: bool | None = Field(None, description="Train on GPUs; None detects.")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Distributed strategy across workers: ddp, or fsdp (FSDP2; not for momentum_proxy)."
    )
    save_every_steps: int = Field(500, ge=1, description="Checkpoint interval in optimizer steps.")
    seed: int = Field(0, description="Training seed.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings.")
    momentum_proxy: MomentumProxySettings = Field(
        default_factory=MomentumProxySettings, description="Instruction-free momentum-proxy tuning."
    )
    vitask: VITaskSettings = Field(default_factory=VITaskSettings, description="VITask objectives.")
    blank_image_fraction: float = Field(
        0.1, ge=0, le=1, description="Synthesizer tuning: fraction of images replaced by a blank image."
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_grad_accum(cls, data: object) -> object:
        """global_batch_size -> grad_accum, before validation (sections re-validate on assignment)."""
        if not isinstance(data, dict) or data.get("global_batch_size") is None:
            return data
        fields = cls.model_fields
        per_step = int(data.get("batch_size", fields["batch_size"].default)) * int(
            data.get("num_workers", fields["num_workers"].default))
        total = int(data["global_batch_size"])
        if per_step <= 0 or total % per_step:
            raise ValueError(f"global_batch_size {total} is not a multiple of batch_size x num_workers = {per_step}")
        derived = total // per_step
        if "grad_accum" in data and int(data["grad_accum"]) != derived:
            raise ValueError(f"grad_accum {data['grad_accum']} contradicts global_batch_size {total} "
                             f"(batch_size x num_workers = {per_step} gives {derived}); set only one")
        return {**data, "grad_accum": derived}
