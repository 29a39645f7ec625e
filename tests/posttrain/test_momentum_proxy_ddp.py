"""Momentum proxy under DDP (2 CPU processes over gloo, no Ray): the proxy lives outside the DDP module, so its
gradient must be averaged across ranks, or each rank would drift to its own proxy on its own shard of the data."""

from __future__ import annotations

import pytest
import torch

from posttrain.config import TrainConfig
from posttrain.momentum_proxy import MomentumProxyRecipe
from tests.posttrain.test_momentum_proxy import make_data


def _worker(rank: int, world: int, init_file: str, files: list[str], out: str, model: str, result_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = TrainConfig(model=model, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, epochs=1, use_gpu=False,
                          save_every_steps=100, momentum_proxy={"num_tokens": 2, "warmup_steps": 2, "momentum": 0.9})
        r = MomentumProxyRecipe(cfg, files, out, rank=rank, world_size=world, device=torch.device("cpu"),
                                wrap_model=lambda m: torch.nn.parallel.DistributedDataParallel(m), stop_after_steps=2)
        r.setup()
        r.warm_up()
        warmed = r.proxy.ema.clone()
        r.train()
        torch.save({"warmed": warmed, "ema": r.proxy.ema.clone(), "ids": list(r.seen_ids),
                    "model": {n: p.detach().clone() for n, p in r.module.named_parameters()}},
                   f"{result_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_share_one_proxy(tiny_vlm_path, tmp_path):
    files = make_data(tmp_path / "d.parquet")
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "init"), files, str(tmp_path / "out"), tiny_vlm_path,
                                               str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert not set(r0["ids"]) & set(r1["ids"])  # each rank trained on its own examples
    assert torch.equal(r0["warmed"], r1["warmed"]) and torch.equal(r0["ema"], r1["ema"])
    assert not torch.equal(r0["warmed"], r0["ema"])
    assert all(torch.equal(p, r1["model"][n]) for n, p in r0["model"].items())
