"""Shared by every recipe: module groups (per-module learning rates, freezing), AdamW parameter groups,
the LR schedule, data-file discovery and atomic writes.

Module groups for per-module learning rates and freezing are found by parameter-name patterns
(`MODULE_PATTERNS`): projector first (Qwen2-VL's merger sits inside `visual`), then vision, and
everything else is the language model. Families covered: Idefics3/SmolVLM (`vision_model`, `connector`,
`text_model`), LLaVA(-Next) (`vision_tower`, `multi_modal_projector`, `language_model`), Qwen2-VL
(`visual`, `visual.merger`, `language_model`), Llama-3.2-Vision (`vision_model`, `multi_modal_projector`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posttrain.config import TrainConfig

MODULE_PATTERNS: dict[str, tuple[str, ...]] = {
    "projector": ("multi_modal_projector", "connector", "visual.merger", "mm_projector", "modality_projection"),
    "vision": ("vision_model", "vision_tower", "visual.", "vision_encoder", "image_encoder"),
}
GROUPS = ("vision", "projector", "language")
TRAINED_SPLITS = ("train", "stage1", "stage2")


def module_group(name: str) -> str:
    """'vision' | 'projector' | 'language' for a parameter name (see MODULE_PATTERNS)."""
    for group in ("projector", "vision"):
        if any(p in name for p in MODULE_PATTERNS[group]):
            return group
    return "language"


def data_files_in(data_dir: str | Path) -> list[str]:
    """Parquet files of a dataset folder (`OUT/data` or `OUT`)."""
    d = Path(data_dir)
    files = sorted(glob.glob(str(d / "*.parquet"))) or sorted(glob.glob(str(d / "data" / "*.parquet")))
    if d.is_file():
        files = [str(d)]
    if not files:
        raise FileNotFoundError(f"no Parquet files in {d} or {d / 'data'}")
    return files


def param_groups(module: torch.nn.Module, cfg: TrainConfig, trainable_names: Sequence[str]) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters per module group, at `lr_<group>` (else `learning_rate`);
    biases and norms go to undecayed `<group>_nd` groups. The names key the learning rates in metrics.jsonl."""
    lrs = {"vision": cfg.lr_vision, "projector": cfg.lr_projector, "language": cfg.lr_language}
    params = dict(module.named_parameters())
    groups = []
    for g in GROUPS:
        names = [n for n in trainable_names if module_group(n) == g]
        for decay in (True, False):
            ps = [params[n] for n in names if (params[n].dim() >= 2) == decay]
            if ps:
                groups.append({"params": ps, "lr": lrs[g] or cfg.learning_rate, "name": f"{g}{'' if decay else '_nd'}",
                               "weight_decay": cfg.weight_decay if decay else 0.0})
    return groups


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """`cfg.lr_scheduler` over `total_steps` optimizer steps, warming up for `cfg.warmup_ratio` of them."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
