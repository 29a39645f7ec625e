"""VITask training: the two-stage loop on the tiny VLM + tiny TSM, and `posttrain.train.train` with method=vitask
end to end (Parquet in, plain model + separate connector out)."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.refs import resolve_model
from posttrain.config import TrainConfig, VITaskSettings
from posttrain.encoding import EncodeOptions
from pipelines.core.contract import messages, write_dataset
from posttrain.vitask import train_vitask
from posttrain.vitask_data import VITaskCollator, VITaskDataset, pad_token_id
from posttrain.vitask_objective import CONNECTOR_FILE, VITaskObjective, load_connector
from tests.posttrain.test_vitask_data import INSTR, image, rows


def _model(path):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(path).eval()


def _cfg(path, **kw) -> TrainConfig:
    base = dict(model=path, learning_rate=2e-3, batch_size=4, lr_scheduler="constant", warmup_ratio=0.0,
                max_length=256, use_gpu=False, seed=0)
    return TrainConfig(**{**base, **kw})


def _fixed_loss(obj, model, batch) -> float:
    with torch.no_grad():
        return obj(model, batch, stage=1).total.item()


def test_two_stage_loop(tiny_vlm_path, processor, tsm):
    model = _model(tiny_vlm_path)
    bad = {"id": "bad", "images": [], "messages": messages([(INSTR, "normal")], n_images=0)}
    ds = VITaskDataset(rows(4) + [bad], processor, EncodeOptions(max_length=256))
    cfg = _cfg(tiny_vlm_path, vitask=VITaskSettings(rda_weight=0.5, crt_weight=1.0))
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, cfg.vitask)
    batch = VITaskCollator(pad_token_id(processor), tsm)([ds[i] for i in range(4)]).positive
    before = _fixed_loss(obj, model, batch)

    # Stage 1 only: connector + VLM learn, the combined loss on the fixed batch falls.
    res = train_vitask(model, processor, obj, ds, cfg, steps={1: 4, 2: 0})
    assert _fixed_loss(obj, model, batch) < before - 0.5
    assert [r["id"] for r in ds.rejects] == ["bad"] and res.n_examples == 4 and res.n_without_negative == 0
    assert [h["stage"] for h in res.history] == [1] * 4 and [h["step"] for h in res.history] == [1, 2, 3, 4]
    assert all({"van", "ep", "rda", "loss"} <= set(h) and "crt" not in h for h in res.history)
    assert res.history[0]["lr"]["connector"] == pytest.approx(2e-3)

    # Stage 2: the connector stays bit-identical, the LLM keeps changing, CRT is logged with its counts.
    conn = {k: v.clone() for k, v in obj.connector.state_dict().items()}
    vlm = {k: v.clone() for k, v in model.state_dict().items()}
    res2 = train_vitask(model, processor, obj, ds, cfg, steps={1: 0, 2: 2})
    assert all(torch.equal(conn[k], v) for k, v in obj.connector.state_dict().items())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(vlm[k], v)]
    # the language model keeps changing; the vision encoder stays frozen (the paper's default, freeze_vision unset)
    assert any("text_model" in k for k in changed) and not any("vision_model" in k for k in changed)
    assert [h["stage"] for h in res2.history] == [2, 2]
    assert all(h["crt_used"] == 4 and h["crt_without_negative"] == 0 and h["crt"] > 0 for h in res2.history)


def test_frozen_groups_stay_unchanged_and_all_bad_rows_fail_loudly(tiny_vlm_path, processor, tsm):
    model = _model(tiny_vlm_path)
    cfg = _cfg(tiny_vlm_path, freeze_vision=True, grad_accum=2, batch_size=2)
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, cfg.vitask)
    vision = {k: v.clone() for k, v in model.state_dict().items() if "vision_model" in k}
    res = train_vitask(model, processor, obj, VITaskDataset(rows(4), processor, EncodeOptions()), cfg,
                       steps={1: 1, 2: 1})
    assert all(torch.equal(vision[k], v) for k, v in model.state_dict().items() if "vision_model" in k)
    assert res.history[1]["crt_used"] == 4  # two micro-batches of 2, counts summed
    empty = VITaskDataset([{"id": "x", "images": [], "messages": messages([("q", "a")], n_images=0)}], processor,
                          EncodeOptions())
    with pytest.raises(ValueError, match="no usable rows"):
        train_vitask(model, processor, obj, empty, cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vlm_path):
    """`posttrain.train.train` with method=vitask on a tiny Parquet dataset."""
    from posttrain.train import train

    data = tmp_path_factory.mktemp("vitask-data")
    q = "Is this scan normal or abnormal? Answer with normal or abnormal."
    examples = [{"id": f"s{i}", "images": [image(20 + 200 * (i % 2) + 3 * i)],
                 "messages": messages([(q, "abnormal" if i % 2 else "normal")])} for i in range(6)]
    examples += [
        {"id": "lonely", "images": [image(120)], "messages": messages([("Which organ is shown?", "lung")])},
        {"id": "long", "images": [image(9)], "messages": messages([(q, "normal " * 300)])},
        {"id": "held_out", "images": [image(50)], "messages": messages([(q, "normal")]), "split": "test"},
    ]
    write_dataset(str(data / "part-0.parquet"), examples)
    out = tmp_path_factory.mktemp("vitask-out")
    cfg = _cfg(tiny_vlm_path, method="vitask", lr_scheduler="cosine", warmup_ratio=0.25,
               vitask=VITaskSettings(tsm=resolve_model("tiny://tsm"), stage1_epochs=1, stage2_epochs=1))
    return train(cfg, data, out), out


def test_train_entry_runs_both_stages_and_logs_components(trained):
    metrics, out = trained
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    # 7 usable examples, batch 4: two steps per epoch and stage.
    assert [r["stage"] for r in recs] == [1, 1, 2, 2] and metrics["steps"] == {"stage1": 2, "stage2": 2}
    assert all({"van", "ep", "rda", "loss", "lr"} <= set(r) for r in recs)
    assert all("crt" not in r for r in recs[:2]) and all(r["crt"] >= 0 for r in recs[2:])
    lr = [r["lr"]["language"] for r in recs]  # one schedule over both stages: warmup, then cosine decay
    assert lr[0] < lr[1] > lr[2] > lr[3] and lr[1] == pytest.approx(2e-3)
    # Stage 2 is one epoch: every example once; the lonely one has no negative.
    crt = metrics["crt"]
    assert (crt["samples_used"], crt["samples_without_negative"], crt["samples_without_tokens"]) == (6, 1, 0)
    assert crt["examples_without_negative"] == 1 and crt["samples_without_negative"] == 1
    assert set(metrics["final"]["stage2"]) >= {"van", "ep", "rda", "crt", "loss"}
    skipped = [json.loads(ln) for ln in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["id"], s["reason"]) for s in skipped] == [("long", "too_long")] and metrics["skipped"] == {"too_long": 1}
    assert json.loads((out / "train_summary.json").read_text())["crt"] == crt


def test_saved_model_is_the_plain_vlm_and_generates(trained, tiny_vlm_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from posttrain.vitask_eval import generate_without_tsm

    _, out = trained
    saved, base = load_file(str(out / "model.safetensors")), load_file(f"{tiny_vlm_path}/model.safetensors")
    assert set(saved) == set(base)  # no connector, no TSM weights
    assert any(not torch.equal(saved[k], base[k]) for k in base)  # and it was trained
    connector, meta = load_connector(out / CONNECTOR_FILE)
    assert meta["tsm"] == resolve_model("tiny://tsm") and connector.mode == "append"  # the paper's EP variant by default
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    answers = generate_without_tsm(model, AutoProcessor.from_pretrained(out), [image(30)], [INSTR], max_new_tokens=3)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_train_entry_refuses_what_it_does_not_support(tmp_path, tiny_vlm_path):
    from posttrain.vitask import train

    with pytest.raises(NotImplementedError, match="num_workers"):
        train(_cfg(tiny_vlm_path, method="vitask", num_workers=2), tmp_path, tmp_path / "out")
