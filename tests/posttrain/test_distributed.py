"""Ray Train: 2 CPU workers (DDP over gloo) train on different shards and end with identical weights."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from posttrain.config import TrainConfig
from posttrain.data import conversation, write_parquet
from posttrain.distributed import train_distributed


@pytest.mark.slow
def test_two_workers_see_different_examples_and_agree(ray_local, tiny_vlm_path, tmp_path):
    colors = ["red", "blue", "green", "white"]
    examples = [{"id": f"d{i}", "images": [Image.new("RGB", (32, 32), colors[i % 4])],
                 "messages": conversation(True, [("Describe the image.", f"a {colors[i % 4]} cell " * (1 + i % 3))])}
                for i in range(16)]
    write_parquet(str(tmp_path / "d.parquet"), examples)
    cfg = TrainConfig(model=tiny_vlm_path, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, use_gpu=False,
                      num_workers=2, save_every_steps=2)
    out = tmp_path / "out"
    metrics = train_distributed(cfg, [str(tmp_path / "d.parquet")], out)
    assert metrics["step"] == 4  # 8 batches of 2, dealt to 2 workers
    w = [json.loads((out / "workers" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    ids0, ids1 = set(w[0]["ids"]), set(w[1]["ids"])
    assert len(w[0]["ids"]) == len(w[1]["ids"]) == 8
    assert not ids0 & ids1 and ids0 | ids1 == {e["id"] for e in examples}
    assert w[0]["weights_sha256"] == w[1]["weights_sha256"]
    assert (out / "model.safetensors").exists() and (out / "checkpoints" / "latest").read_text() == "step-0000004"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
