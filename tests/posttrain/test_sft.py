"""SFT recipe: training lowers the loss, per-module groups, LoRA, final save, and exact kill/resume."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from posttrain.config import TrainConfig
from pipelines.core.contract import messages, write_dataset
from posttrain.optim import module_group
from posttrain.sft import SFTRecipe
from posttrain.train import train

COLORS = ["red", "blue", "green", "white", "black", "yellow"]


def make_data(path, n=24):
    examples = []
    for i in range(n):
        c = COLORS[i % len(COLORS)]
        turns = [("Describe the image.", f"a {c} cell"), ("What color is the tissue?", " ".join([c] * (1 + i % 5)))]
        examples.append({"id": f"ex{i}", "images": [Image.new("RGB", (32 + 8 * (i % 3), 32), c)],
                         "messages": messages(turns)})
    # too long for max_length=256 and not allowed to be cut: skipped and recorded, never silently dropped
    examples.append({"id": "too_long", "images": [Image.new("RGB", (32, 32))],
                     "messages": messages([("Describe the image.", "cell " * 300)])})
    write_dataset(str(path), examples)
    return [str(path)]


def cfg_for(model, **kw):
    base = dict(model=model, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, max_length=256, use_gpu=False,
                save_every_steps=2, seed=0, lr_scheduler="cosine")
    base.update(kw)
    return TrainConfig(**base)


def losses(out):
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "part-0.parquet")


@pytest.mark.parametrize("name,group", [
    ("model.vision_model.encoder.layers.0.mlp.fc1.weight", "vision"),
    ("model.connector.modality_projection.proj.weight", "projector"),
    ("model.text_model.layers.0.self_attn.q_proj.weight", "language"),
    ("lm_head.weight", "language"),
    ("model.visual.blocks.0.attn.qkv.weight", "vision"),           # Qwen2-VL
    ("model.visual.merger.mlp.0.weight", "projector"),             # Qwen2-VL
    ("model.vision_tower.vision_model.embeddings.patch_embedding.weight", "vision"),  # LLaVA
    ("model.multi_modal_projector.linear_1.weight", "projector"),  # LLaVA / Mllama
    ("model.language_model.layers.0.mlp.up_proj.weight", "language"),
    ("base_model.model.model.text_model.layers.0.self_attn.q_proj.lora_A.default.weight", "language"),
])
def test_module_group(name, group):
    assert module_group(name) == group


def test_train_lowers_loss_and_saves_loadable_model(tiny_vlm_path, files, tmp_path):
    out = tmp_path / "run"
    metrics = train(cfg_for(tiny_vlm_path, epochs=3, save_every_steps=100), files[0].rsplit("/", 1)[0], out)
    ls = losses(out)
    assert metrics["step"] == len(ls) == 18
    assert sum(ls[-3:]) / 3 < sum(ls[:3]) / 3 - 0.5
    assert metrics["skipped"] == {"too_long": 1} and metrics["examples"] == 24
    skipped = [json.loads(ln) for ln in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["id"], s["reason"]) for s in skipped] == [("too_long", "too_long")]
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(out)
    proc = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration" and proc.tokenizer.pad_token_id is not None
    assert (out / "checkpoints" / "latest").read_text() == "step-0000018"


def test_freeze_and_per_module_learning_rates(tiny_vlm_path, files, tmp_path):
    cfg = cfg_for(tiny_vlm_path, freeze_vision=True, lr_projector=5e-3, lr_language=1e-4, epochs=1)
    r = SFTRecipe(cfg, files, tmp_path / "run")
    r.setup()
    before = {n: p.detach().clone() for n, p in r.module.named_parameters()}
    lrs = {g["name"]: g["initial_lr"] for g in r.optimizer.param_groups}
    assert lrs == {"projector": 5e-3, "language": 1e-4, "language_nd": 1e-4}
    r.train()
    for n, p in r.module.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == (module_group(n) != "vision"), n


def test_lora_trains_adapters_and_saves_merged_model(tiny_vlm_path, files, tmp_path):
    cfg = cfg_for(tiny_vlm_path, lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}, epochs=1)
    r = SFTRecipe(cfg, files, tmp_path / "run")
    r.setup()
    assert r.trainable_names and all("lora_" in n for n in r.trainable_names)
    r.train()
    out = tmp_path / "run"
    assert (out / "adapter" / "adapter_config.json").exists()
    w = weights(out)
    assert not any("lora" in k for k in w)
    base = weights(__import__("pathlib").Path(tiny_vlm_path))
    k = next(k for k in w if k.endswith("q_proj.weight") and "text_model" in k)
    assert not torch.equal(w[k], base[k])  # merged adapters changed the base weights


def test_kill_and_resume_matches_uninterrupted_run(tiny_vlm_path, files, tmp_path):
    cfg = cfg_for(tiny_vlm_path, epochs=2, grad_accum=2, lora={"enabled": True, "r": 4, "dropout": 0.1})
    full = tmp_path / "full"
    a = SFTRecipe(cfg, files, full)
    a.setup()
    a.train()

    part = tmp_path / "part"
    b = SFTRecipe(cfg, files, part, stop_after_steps=3)  # checkpoint at step 2, step 3 is lost like a kill
    b.setup()
    assert b.train()["stopped_early"]
    assert (part / "checkpoints" / "latest").read_text() == "step-0000002"
    c = SFTRecipe(cfg, files, part)
    c.setup()
    assert c.step == 2
    c.train()
    assert c.step == a.step == 6
    assert losses(part) == pytest.approx(losses(full), abs=1e-6)
    wa, wb = weights(full), weights(part)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)
