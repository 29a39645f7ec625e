"""The SFT-style recipes under Ray Train `TorchTrainer`: one process per worker (GPU, or CPU with gloo).

DDP by default; FSDP when `cfg.strategy == "fsdp"` (Ray's `prepare_model(parallel_strategy="fsdp")`,
`use_orig_params=True`). Each worker gets its own shard of the batches (the length-grouped sampler
deals batches `rank::world_size`). Rank 0 writes metrics, checkpoints and the final model; every worker
writes `workers/rank-<r>.json` with the example ids it trained on and a hash of its final weights.

Limits: under FSDP the final model is gathered to rank 0 with a full state dict, but intermediate
checkpoints (sharded optimizer state) are not written, so an FSDP run cannot resume. FSDP was not
exercised on CPU here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posttrain.config import TrainConfig

log = logging.getLogger(__name__)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter (name, bytes), in name order."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters(), key=lambda x: x[0]):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def _fsdp_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    full = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, full):
        return model.state_dict()


def _worker_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from posttrain.sft import recipe_class

    cfg = TrainConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    fsdp = cfg.strategy == "fsdp"
    kwargs = {"use_orig_params": True} if fsdp else None

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy=cfg.strategy, parallel_strategy_kwargs=kwargs)

    cls = recipe_class(cfg.method)
    if fsdp:
        cls = type(f"FSDP{cls.__name__}", (_FSDPSaving, cls), {})
    recipe = cls(cfg, config["data_files"], config["out_dir"], rank=rank, world_size=world, wrap_model=wrap,
                 device=ray.train.torch.get_device())
    recipe.setup()
    metrics = recipe.train()
    out = Path(config["out_dir"]) / "workers"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank, "ids": recipe.seen_ids, "weights_sha256": None if fsdp else weights_digest(recipe.module),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, dict, type(None)))},
    }))
    recipe.cleanup()
    ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


class _FSDPSaving:
    """Final save through a full state dict gathered on rank 0; no intermediate checkpoints."""

    def save_checkpoint(self) -> None:  # type: ignore[override]
        log.warning("FSDP: intermediate checkpoints are not written (sharded optimizer state)")

    def save_final(self) -> None:  # type: ignore[override]
        state = _fsdp_full_state(self.model)
        if self.rank == 0:
            self.module.load_state_dict(state)
            super().save_final()


def train_distributed(cfg: TrainConfig, data_files: Sequence[str], out_dir: str | Path) -> dict[str, Any]:
    """Run `cfg.method` on `cfg.num_workers` Ray Train workers; returns rank 0's metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else bool(ray.cluster_resources().get("GPU", 0))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "out_dir": str(out),
                           "data_files": [str(Path(f).resolve()) for f in data_files]},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="train", storage_path=str(out / "ray")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    # Ray Train v2 keeps reported metrics only with checkpoints; rank 0 wrote its own.
    metrics = json.loads((out / "workers" / "rank-0.json").read_text())["metrics"]
    (out / "train_summary.json").write_text(json.dumps(metrics, indent=2))
    return metrics
