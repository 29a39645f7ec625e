"""The SFT-style recipes under Ray Train `TorchTrainer`: one process per worker (GPU, or CPU with gloo).

DDP by default (Ray's `prepare_model`). FSDP when `cfg.strategy == "fsdp"`: FSDP2 `fully_shard` on a 1-D
device mesh over all workers, each repeated block (decoder layer, vision encoder layer) sharded on its own
and the root last; it runs on CPU over gloo as well as on GPUs over NCCL. Each worker gets
its own shard of the batches (the length-grouped sampler deals batches `rank::world_size`). Rank 0 writes
metrics, checkpoints and the final model; every worker writes `workers/rank-<r>.json` with the example
ids it trained on and (DDP) a hash of its final weights.

FSDP checkpoints gather a full state dict to rank 0 (CPU offloaded) and use the same folder layout as
the single-process recipe: `model.pt` holds the full trainable weights (same format as DDP), and
`optimizer.full.pt` the optimizer state keyed by parameter name (`torch.distributed.checkpoint.state_dict`
format, not the id-keyed `optimizer.pt` of DDP; the different name makes a cross-strategy resume fail on a
missing file rather than load the wrong layout). On resume every rank reads the full files and keeps its
shard. Gathering costs one full copy of the
trainable weights and optimizer state in rank 0's CPU memory per checkpoint; for models beyond that,
sharded `torch.distributed.checkpoint.save` would be the next step. The final model is gathered the
same way and loaded into a fresh unsharded copy on rank 0, which `save_pretrained` writes.
Recipes that keep method state outside the model (`method_modules`, e.g. momentum_proxy) are refused
under FSDP: that state is neither sharded nor covered by the name-keyed optimizer checkpoint.
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
from posttrain.sft import SFTRecipe

log = logging.getLogger(__name__)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter (name, bytes), in name order."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters(), key=lambda x: x[0]):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def fsdp_shard(module: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """FSDP2: shard every repeated block (each child of an `nn.ModuleList`: decoder layers, vision encoder
    layers), then the root, over all ranks; in place, returns `module`. Blocks rather than HF's
    `_no_split_modules`: that list names attention modules too (Idefics3), whose view outputs FSDP2 warns
    can lose its pre-backward all-gather."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    blocks = [b for m in module.modules() if isinstance(m, torch.nn.ModuleList) for b in m]
    if not blocks:
        log.warning("%s has no nn.ModuleList of blocks: sharding the root module only", type(module).__name__)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


class _FSDPCheckpointing:
    """Checkpoints and the final save of an FSDP recipe through full state dicts gathered on rank 0."""

    def checkpoint_tensors(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer, options=_full_options())  # collective
        if self.rank != 0:
            return {}
        names = set(self.trainable_names)
        return {"model.pt": {n: t for n, t in model_sd.items() if n in names}, "optimizer.full.pt": optim_sd}

    def restore_tensors(self, d: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        model_sd = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
        optim_sd = torch.load(d / "optimizer.full.pt", map_location="cpu", weights_only=True)
        # strict=False: model.pt holds the trainable weights only; frozen ones come from the base model
        set_state_dict(self.model, self.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                       options=StateDictOptions(full_state_dict=True, strict=False))

    def save_final(self) -> None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.model, options=_full_options())  # collective
        if self.rank != 0:
            return
        full = self.load_module()
        full.load_state_dict(state)
        self.module = full  # training is over; the unsharded copy is what gets saved
        super().save_final()


def _worker_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    fsdp = cfg.strategy == "fsdp"

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if fsdp:
            return fsdp_shard(module, device, world)
        return ray.train.torch.prepare_model(module, parallel_strategy="ddp")

    cls = config["recipe_cls"]
    if fsdp:
        cls = type(f"FSDP{cls.__name__}", (_FSDPCheckpointing, cls), {})
    recipe = cls(cfg, config["data_files"], config["out_dir"], rank=rank, world_size=world, wrap_model=wrap,
                 device=device, stop_after_steps=config.get("stop_after_steps"))
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


def check_strategy(cfg: TrainConfig, recipe_cls: type[SFTRecipe]) -> None:
    """Raise ValueError for a method the chosen strategy cannot train."""
    if cfg.strategy == "fsdp" and recipe_cls.method_modules is not SFTRecipe.method_modules:
        raise ValueError(f"strategy 'fsdp' does not support method {cfg.method!r}: its method state lives "
                         "outside the model and would be neither sharded nor checkpointed; use strategy 'ddp'")


def train_distributed(cfg: TrainConfig, recipe_cls: type[SFTRecipe], data_files: Sequence[str], out_dir: str | Path, *,
                      stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run RECIPE_CLS (`cfg.method`'s recipe) on `cfg.num_workers` Ray Train workers; returns rank 0's metrics.

    `stop_after_steps` ends every worker after that many optimizer steps without a final save
    (a test hook that plays a kill; the next call with the same `out_dir` resumes)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_strategy(cfg, recipe_cls)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else bool(ray.cluster_resources().get("GPU", 0))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "recipe_cls": recipe_cls, "out_dir": str(out),
                           "data_files": [str(Path(f).resolve()) for f in data_files],
                           "stop_after_steps": stop_after_steps},
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
