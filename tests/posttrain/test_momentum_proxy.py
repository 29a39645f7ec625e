"""Momentum proxy: EMA math, injection into inputs_embeds, response shuffling, phases, a short run."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image

from posttrain.config import TrainConfig
from pipelines.core.contract import messages, write_dataset
from posttrain.momentum_proxy import MomentumProxy, MomentumProxyRecipe, shuffle_segments


def test_ema_step_matches_hand_computation():
    init = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mp = MomentumProxy(2, 2, momentum=0.9, init=init)
    with torch.no_grad():
        mp.proxy.copy_(torch.tensor([[2.0, 0.0], [3.0, 14.0]]))
    mp.update_ema()
    # 0.9 * ema + 0.1 * proxy
    assert torch.allclose(mp.ema, torch.tensor([[1.1, 1.8], [3.0, 5.0]]))
    assert torch.equal(mp.proxy.detach(), torch.tensor([[2.0, 0.0], [3.0, 14.0]]))


def test_reset_and_start_momentum_copy_values():
    mp = MomentumProxy(2, 3, momentum=0.5, init=torch.ones(2, 3))
    with torch.no_grad():
        mp.proxy.add_(1.0)
    assert not bool(mp.warmed_up)
    mp.start_momentum()  # EMA starts from the (warmed-up) live proxy
    assert torch.equal(mp.ema, torch.full((2, 3), 2.0)) and bool(mp.warmed_up)
    with torch.no_grad():
        mp.proxy.add_(5.0)
    mp.reset_to_ema()
    assert torch.equal(mp.proxy.detach(), torch.full((2, 3), 2.0))


def test_inject_replaces_exactly_the_placeholder_positions():
    mp = MomentumProxy(2, 4, init=torch.arange(8.0).view(2, 4))
    embeds = torch.randn(2, 5, 4)
    mask = torch.tensor([[False, True, True, False, False], [False, False, False, True, True]])
    out = mp.inject(embeds, mask)
    assert torch.equal(out[0, 1], mp.proxy[0]) and torch.equal(out[0, 2], mp.proxy[1])
    assert torch.equal(out[1, 3], mp.proxy[0]) and torch.equal(out[1, 4], mp.proxy[1])
    assert torch.equal(out[~mask], embeds[~mask])


def test_shuffle_keeps_segments_and_changes_order_across_epochs():
    text = "red, blue, green, white, black, yellow"
    outs = [shuffle_segments(text, ",", f"0:{epoch}:x") for epoch in range(6)]
    for o in outs:
        assert Counter(o.split(", ")) == Counter(text.split(", "))
    assert len(set(outs)) > 1
    assert outs[2] == shuffle_segments(text, ",", "0:2:x")  # seeded
    assert shuffle_segments("no delimiter here", ",", 1) == "no delimiter here"


def make_data(path, n=16):
    colors = ["red", "blue", "green", "white"]
    examples = [{"id": f"e{i}", "images": [Image.new("RGB", (32, 32), colors[i % 4])],
                 "messages": messages([("What colors are in the image?",
                                                  ", ".join(colors[(i + k) % 4] for k in range(3)))])}
                for i in range(n)]
    write_dataset(str(path), examples)
    return [str(path)]


@pytest.fixture(scope="module")
def recipe_run(tiny_vlm_path, tmp_path_factory):
    files = make_data(tmp_path_factory.mktemp("mp") / "d.parquet")
    out = tmp_path_factory.mktemp("mp_out")
    cfg = TrainConfig(model=tiny_vlm_path, batch_size=4, learning_rate=2e-3, warmup_ratio=0.0, epochs=4,
                      use_gpu=False, save_every_steps=100, momentum_proxy={"num_tokens": 4, "warmup_steps": 3,
                                                                         "momentum": 0.9})
    r = MomentumProxyRecipe(cfg, files, out)
    r.setup()
    return r, out


def test_instruction_positions_get_the_proxy(recipe_run):
    r, _ = recipe_run
    batch = r.collator([r.dataset[0], r.dataset[1]])
    text = r.processor.tokenizer.decode(batch["input_ids"][0])
    assert "What colors" not in text and text.count(r.processor.tokenizer.pad_token) >= 4
    embeds = r.inputs_embeds(batch)
    mask = (batch["input_ids"] == r.placeholder_id) & (batch["attention_mask"] == 1)
    assert int(mask[0].sum()) == 4
    pos = mask[0].nonzero().flatten()
    assert torch.equal(embeds[0, pos], r.proxy.proxy)
    plain = r.module.get_input_embeddings()(batch["input_ids"])
    assert torch.equal(embeds[~mask], plain[~mask])


def test_short_run_lowers_loss_and_follows_the_phases(recipe_run):
    r, out = recipe_run
    model_before = {n: p.detach().clone() for n, p in r.module.named_parameters()}
    proxy_before = r.proxy.proxy.detach().clone()
    assert r.warm_up() == 3  # phase 1 only
    assert all(torch.equal(model_before[n], p) for n, p in r.module.named_parameters())
    assert not torch.equal(proxy_before, r.proxy.proxy) and torch.equal(r.proxy.ema, r.proxy.proxy)
    warmed = r.proxy.ema.clone()
    m = r.train()  # warmed_up is set: no second warm-up
    assert any(not torch.equal(model_before[n], p) for n, p in r.module.named_parameters())
    assert not torch.equal(r.proxy.ema, warmed)
    assert len((out / "warmup_metrics.jsonl").read_text().splitlines()) == 3
    losses = [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert m["step"] == len(losses) == 16
    assert sum(losses[-3:]) < sum(losses[:3])
    from safetensors.torch import load_file

    assert not any("proxy" in k for k in load_file(str(out / "model.safetensors")))
