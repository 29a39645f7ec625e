"""The training entry point: `train(cfg, data_dir, out_dir)` runs `cfg.method` (`sft`, `momentum_proxy`,
`synthesizer` recipes in one process or on Ray Train workers; `vitask`, which owns its loop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posttrain.config import TrainConfig
from posttrain.momentum_proxy import MomentumProxyRecipe
from posttrain.optim import atomic_write, data_files_in
from posttrain.sft import SFTRecipe
from posttrain.synthesizer_tuning import SynthesizerTuningRecipe

RECIPES: dict[str, type[SFTRecipe]] = {
    "sft": SFTRecipe,
    "momentum_proxy": MomentumProxyRecipe,
    "synthesizer": SynthesizerTuningRecipe,
}


def recipe_class(method: str) -> type[SFTRecipe]:
    """The recipe class of an SFT-style method."""
    if method not in RECIPES:
        raise ValueError(f"method {method!r} has no SFT-style recipe; allowed: {sorted(RECIPES)}")
    return RECIPES[method]


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train `cfg.method` on the dataset in `data_dir`; the final model lands in `out_dir`. Returns metrics.
    `cfg.model` is a local path or hub id (references are resolved at the edge)."""
    if cfg.method == "vitask":
        from posttrain import vitask  # VITask owns its two-stage loop

        return vitask.train(cfg, data_dir, out_dir)
    files = data_files_in(data_dir)
    recipe_cls = recipe_class(cfg.method)
    if cfg.num_workers > 1:
        from posttrain.distributed import train_distributed

        return train_distributed(cfg, recipe_cls, files, out_dir)
    recipe = recipe_cls(cfg, files, out_dir)
    recipe.setup()
    try:
        metrics = recipe.train()
    finally:
        recipe.cleanup()
    atomic_write(Path(out_dir) / "train_summary.json", json.dumps(metrics, indent=2, default=str))
    return metrics
