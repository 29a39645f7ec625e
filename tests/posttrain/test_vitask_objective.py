"""VITask objective on the tiny VLM + tiny TSM: exemplar injection, negative alignment, stage-2 counts,
connector save/load."""

from __future__ import annotations

import pytest
import torch

from posttrain.config import VITaskSettings
from posttrain.encoding import EncodeOptions
from pipelines.core.contract import messages
from posttrain.vitask_data import VITaskCollator, VITaskDataset, pad_token_id
from posttrain.vitask_objective import (
    ExemplarConnector,
    VITaskObjective,
    align_negative_logits,
    forward_logits,
    load_connector,
    save_connector,
)
from tests.posttrain.test_vitask_data import image, rows


@pytest.fixture(scope="module")
def model(tiny_vlm_path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_vlm_path).eval()


def _vbatch(processor, tsm, data):
    ds = VITaskDataset(data, processor, EncodeOptions(max_length=256))
    return VITaskCollator(pad_token_id(processor), tsm)([ds[i] for i in range(len(ds))])


def test_inputs_embeds_path_equals_normal_forward_when_exemplar_is_zero(model, processor, tsm):
    batch = _vbatch(processor, tsm, rows(4)).positive
    hidden = model.config.text_config.hidden_size
    with torch.no_grad():
        ref = model(**batch.model_inputs()).logits
        plain = forward_logits(model, batch)
        zero = forward_logits(model, batch, torch.zeros(4, hidden), "add")
        connector = ExemplarConnector(tsm.feature_dim, hidden)
        torch.nn.init.zeros_(connector.mlp[2].weight)
        torch.nn.init.zeros_(connector.mlp[2].bias)
        through_connector = forward_logits(model, batch, connector(tsm.features(batch.tsm_pixels)), "add")
    torch.testing.assert_close(plain, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zero, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(through_connector, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["add", "append"])
def test_exemplar_changes_logits_only_after_the_image(model, processor, tsm, mode):
    batch = _vbatch(processor, tsm, rows(4)).positive
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, VITaskSettings(connector=mode, connector_tokens=2))
    with torch.no_grad():
        ref = forward_logits(model, batch)
        ep = forward_logits(model, batch, obj.exemplar(batch), mode)
    assert ep.shape == ref.shape
    image_pos = (batch.input_ids[0] == model.config.image_token_id).nonzero().squeeze(-1)
    first, last = int(image_pos[0]), int(image_pos[-1])
    # Causal LM: positions before the exemplar are untouched, positions after it change.
    cut = first if mode == "add" else last + 1
    torch.testing.assert_close(ep[:, :cut], ref[:, :cut])
    assert (ep[:, last + 1 :] - ref[:, last + 1 :]).abs().amax() > 1e-3
    # Different images give different exemplars, hence different shifts.
    delta = (ep - ref)[:, -1]
    assert not torch.allclose(delta[0], delta[1])


def test_align_negative_logits_moves_response_positions():
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, 8, -100]])
    neg_labels = torch.tensor([[-100, -100, -100, 7, 8]])  # sample 1's response, two tokens later
    neg_logits = torch.arange(5 * 3, dtype=torch.float32).view(1, 5, 3)
    out = align_negative_logits(labels, neg_logits, neg_labels, rows=[1], T=4)
    assert out.shape == (2, 4, 3)
    torch.testing.assert_close(out[1, 0:2], neg_logits[0, 2:4])
    assert out[0].abs().sum() == 0
    with pytest.raises(ValueError):
        align_negative_logits(labels, neg_logits, torch.tensor([[-100, -100, -100, 7, 9]]), rows=[1], T=4)


def test_stage2_objective_counts_samples_without_negative(model, processor, tsm):
    lonely = {"id": "lonely", "images": [image(99)], "messages": messages([("Other question?", "x")])}
    vb = _vbatch(processor, tsm, rows(3) + [lonely])
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, VITaskSettings())
    with torch.no_grad():
        out = obj(model, vb.positive, stage=2, negative=vb.negative, negative_rows=vb.negative_rows)
        stage1 = obj(model, vb.positive, stage=1)
    assert set(out.components) == {"van", "ep", "rda", "crt"} and set(stage1.components) == {"van", "ep", "rda"}
    assert out.logged["crt_used"] == 3 and out.logged["crt_without_negative"] == 1
    assert out.crt.loss.item() > 0
    want = sum(out.logged[k] * w for k, w in obj.weights(2).items())
    assert out.logged["total"] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("mode", ["add", "append"])
def test_connector_save_load_round_trip(tmp_path, mode):
    torch.manual_seed(0)
    conn = ExemplarConnector(12, 16, mode, num_tokens=3)
    path = save_connector(conn, tmp_path / "c.safetensors", tsm="tiny://tsm")
    back, meta = load_connector(path)
    assert meta["tsm"] == "tiny://tsm" and back.mode == mode and back.num_tokens == conn.num_tokens
    x = torch.randn(2, 12)
    torch.testing.assert_close(back(x), conn(x))
