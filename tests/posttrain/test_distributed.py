"""Ray Train with 2 CPU workers over gloo: DDP shards the data and ends with identical weights; FSDP2
trains, checkpoints, resumes after a kill to the weights of an uninterrupted run, and saves a loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from posttrain.config import TrainConfig
from pipelines.core.contract import messages, write_dataset
from posttrain.distributed import check_strategy, train_distributed
from posttrain.train import recipe_class

COLORS = ["red", "blue", "green", "white"]


def make_data(path, n=16):
    examples = [{"id": f"d{i}", "images": [Image.new("RGB", (32, 32), COLORS[i % 4])],
                 "messages": messages([("Describe the image.", f"a {COLORS[i % 4]} cell " * (1 + i % 3))])}
                for i in range(n)]
    write_dataset(str(path), examples)
    return examples


def losses(out):
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


@pytest.mark.slow
def test_two_workers_see_different_examples_and_agree(ray_local, tiny_vlm_path, tmp_path):
    examples = make_data(tmp_path / "d.parquet")
    cfg = TrainConfig(model=tiny_vlm_path, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, use_gpu=False,
                      num_workers=2, save_every_steps=2)
    out = tmp_path / "out"
    metrics = train_distributed(cfg, recipe_class(cfg.method), [str(tmp_path / "d.parquet")], out)
    assert metrics["step"] == 4  # 8 batches of 2, dealt to 2 workers
    w = [json.loads((out / "workers" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    ids0, ids1 = set(w[0]["ids"]), set(w[1]["ids"])
    assert len(w[0]["ids"]) == len(w[1]["ids"]) == 8
    assert not ids0 & ids1 and ids0 | ids1 == {e["id"] for e in examples}
    assert w[0]["weights_sha256"] == w[1]["weights_sha256"]
    assert (out / "model.safetensors").exists() and (out / "checkpoints" / "latest").read_text() == "step-0000004"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
def test_fsdp_trains_resumes_after_kill_and_saves_loadable_model(ray_local, tiny_vlm_path, tmp_path):
    examples = make_data(tmp_path / "d.parquet")
    files = [str(tmp_path / "d.parquet")]
    # 2 epochs of 4 steps (8 batches of 2 dealt to 2 workers); constant lr keeps late steps moving weights
    cfg = TrainConfig(model=tiny_vlm_path, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, use_gpu=False,
                      num_workers=2, strategy="fsdp", epochs=2, save_every_steps=2, lr_scheduler="constant")

    full = tmp_path / "full"
    metrics = train_distributed(cfg, recipe_class(cfg.method), files, full)
    ls = losses(full)
    assert metrics["step"] == len(ls) == 8
    assert sum(ls[-3:]) / 3 < sum(ls[:3]) / 3 - 0.5, ls
    w = [json.loads((full / "workers" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert len(w[0]["ids"]) == len(w[1]["ids"]) == 16
    for e in range(2):  # each epoch is dealt anew: the two ranks split it exactly
        ids0, ids1 = set(w[0]["ids"][8 * e:8 * e + 8]), set(w[1]["ids"][8 * e:8 * e + 8])
        assert not ids0 & ids1 and ids0 | ids1 == {x["id"] for x in examples}
    ckpt = full / "checkpoints" / "step-0000008"
    assert (ckpt / "model.pt").exists() and (ckpt / "optimizer.full.pt").exists()

    part = tmp_path / "part"
    # checkpoint at step 2; step 3 is trained and then lost, as in a kill
    assert train_distributed(cfg, recipe_class(cfg.method), files, part, stop_after_steps=3)["stopped_early"]
    assert (part / "checkpoints" / "latest").read_text() == "step-0000002"
    assert not (part / "model.safetensors").exists()
    assert train_distributed(cfg, recipe_class(cfg.method), files, part)["step"] == 8
    resumed = json.loads((part / "workers" / "rank-0.json").read_text())
    assert len(resumed["ids"]) == 12  # it went on from step 2 (6 steps of 2 examples), not from scratch
    # The resumed run repeats the uninterrupted one's arithmetic (same batches, same gloo reductions, fp32
    # state restored losslessly): on CPU here it matches bit for bit; 1e-6 leaves room for reassociation
    # noise (~1e-7) of other reduction backends, while a lost optimizer state or a shifted data position
    # moves weights by ~lr = 1e-3 per step.
    assert losses(part) == pytest.approx(ls, abs=1e-6)
    wa, wb = weights(full), weights(part)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=0, msg=k)

    from transformers import AutoModelForImageTextToText

    base = weights(Path(tiny_vlm_path))
    assert any(not torch.equal(wa[k], base[k]) for k in base)  # training changed the saved weights
    model = AutoModelForImageTextToText.from_pretrained(full)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    params = dict(model.named_parameters())
    assert set(params) <= set(wa)  # nothing re-initialised on load
    for n, p in params.items():
        assert torch.equal(p.detach(), wa[n]), n


def test_fsdp_refuses_methods_with_state_outside_the_model(tiny_vlm_path):
    check_strategy(TrainConfig(model=tiny_vlm_path, strategy="fsdp", method="synthesizer"), recipe_class("synthesizer"))
    check_strategy(TrainConfig(model=tiny_vlm_path, strategy="ddp", method="momentum_proxy"), recipe_class("momentum_proxy"))
    with pytest.raises(ValueError, match="fsdp.*momentum_proxy"):
        check_strategy(TrainConfig(model=tiny_vlm_path, strategy="fsdp", method="momentum_proxy"), recipe_class("momentum_proxy"))
