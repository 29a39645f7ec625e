"""VITask against its paper (arXiv 2410.06456; the authors' repository holds only a README, so the paper is the
reference). Expected values are computed here by hand from the paper's formulas, never by the code under test:
- L_CRT: per response token y_t, -log softmax over the vocabulary of (z+_t - z-_t) at y_t, z+/z- the logits
  under the sample's own image / the image of another sample with the same instruction and another answer;
- L_RDA: D_KL(p(y | image, exemplar, instruction) || p(y | image, instruction)), the exemplar-prompted model
  as the (stop-gradient) teacher, temperature 1;
- EP (best variant): the TSM's CLS feature, through a learnable connector, given to the LLM as exemplar token(s);
- recipe: vision encoder frozen, LoRA on the LLM.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.refs import resolve_model
from posttrain.config import TrainConfig, VITaskSettings
from pipelines.core.contract import messages, write_dataset
from posttrain.encoding import EncodeOptions
from posttrain.losses import crt, rda_kl
from posttrain.vitask_data import VITaskCollator, VITaskDataset, pad_token_id
from posttrain.vitask_objective import VITaskObjective, load_tsm
from tests.posttrain.test_vitask_data import image, rows

LN2 = math.log(2.0)
LN3 = math.log(3.0)


def test_crt_is_vocab_softmax_of_the_logit_difference():
    """VITask L_CRT: l_t = -log softmax_v(z+ - z-)[y_t]; mean over a sample's response tokens.

    Token 1 (t=0 -> y=0): z+ = (2, 0, 1), z- = (0, 1, 1): d = (2, -1, 0), l = -log(e^2 / (e^2 + e^-1 + 1)).
    Token 2 (t=1 -> y=2): z+ = (0, 0, 0), z- = (0, ln2, 0): d = (0, -ln2, 0), l = -log(1 / (1 + 1/2 + 1)) = ln 2.5.
    """
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    neg = torch.tensor([[[0.0, 1.0, 1.0], [0.0, LN2, 0.0], [-9.0, 0.0, 9.0]]])
    labels = torch.tensor([[-100, 0, 2]])
    t1 = -math.log(math.exp(2) / (math.exp(2) + math.exp(-1) + 1))
    t2 = math.log(2.5)
    out = crt(logits, neg, labels, torch.tensor([True]))
    assert out.loss.item() == pytest.approx((t1 + t2) / 2, rel=1e-6)
    assert out.n_tokens == 2
    # A constant added to one image's logits at a position leaves the softmax of the difference unchanged,
    # and the target-score variant (score) plays no part in this form.
    shifted = neg + torch.tensor([5.0, -3.0, 0.0]).view(1, 3, 1)
    assert crt(logits, shifted, labels, torch.tensor([True]), score="logprob").loss.item() == pytest.approx(
        (t1 + t2) / 2, rel=1e-6)
    # It is not the two-way softplus on the target token: softplus(0 - 2) and softplus(0 - 0) there.
    binary = crt(logits, neg, labels, torch.tensor([True]), form="binary").loss.item()
    assert binary == pytest.approx((math.log1p(math.exp(-2)) + LN2) / 2, rel=1e-6)
    assert binary != pytest.approx(out.loss.item(), rel=1e-3)


def test_crt_gradient_pushes_the_target_up_under_the_own_image():
    """d l / d z+ = softmax(z+ - z-) - onehot(y) (derivative of -log softmax), and d l / d z- is its negative."""
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    neg = torch.tensor([[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    crt(logits, neg, torch.tensor([[-100, 0]]), torch.tensor([True])).loss.backward()
    e = [math.exp(2), math.exp(-1), 1.0]
    want = torch.tensor([e[0] / sum(e) - 1, e[1] / sum(e), e[2] / sum(e)])
    torch.testing.assert_close(logits.grad[0, 0], want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(neg.grad[0, 0], -want, rtol=1e-5, atol=1e-7)


def test_rda_is_kl_from_the_exemplar_prompted_teacher():
    """VITask L_RDA = D_KL(q || p), q = exemplar-prompted (teacher, stop-gradient), p = plain (student).

    One response token: p = softmax(0, 0) = (1/2, 1/2), q = softmax(ln3, 0) = (3/4, 1/4):
    KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2); gradient wrt the student logits = p - q = (-1/4, 1/4).
    """
    student = torch.tensor([[[0.0, 0.0], [7.0, 7.0]]], requires_grad=True)
    teacher = torch.tensor([[[LN3, 0.0], [-7.0, 7.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 1]])
    loss = rda_kl(student, teacher, labels)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(student.grad[0, 0], torch.tensor([-0.25, 0.25]), rtol=1e-6, atol=1e-7)
    assert teacher.grad is None  # the teacher is detached
    assert VITaskSettings().rda_direction == "forward"


def test_defaults_are_the_papers_recipe():
    """Paper: CRT over the vocabulary, RDA from the exemplar-prompted model, EP = CLS exemplar token(s),
    frozen vision encoder (train.freeze_vision unset means frozen for vitask; the 'add' variant stays by config)."""
    s = VITaskSettings()
    assert (s.crt_form, s.rda_direction, s.connector, s.tsm_feature) == ("vocab", "forward", "append", "cls")
    assert TrainConfig().freeze_vision is None
    assert VITaskSettings(connector="add", tsm_feature="pooled", crt_form="binary").connector == "add"


def test_default_exemplar_is_the_tsm_cls_feature_as_a_token_after_the_image(tiny_vlm_path, processor):
    """EP best variant: exemplar token = connector(CLS feature of the TSM's last hidden state), inserted into the
    LLM input right after the image tokens (the CLS feature is computed here from the TSM backbone directly)."""
    from transformers import AutoModelForImageTextToText

    from posttrain.vitask_objective import forward_logits

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_path).eval()
    settings = VITaskSettings(tsm=resolve_model("tiny://tsm"))
    tsm = load_tsm(settings)
    ds = VITaskDataset(rows(2), processor, EncodeOptions(max_length=256))
    batch = VITaskCollator(pad_token_id(processor), tsm)([ds[0], ds[1]]).positive
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, settings)
    with torch.no_grad():
        cls = tsm.backbone(pixel_values=batch.tsm_pixels, output_hidden_states=True).hidden_states[-1][:, 0]
        want = obj.connector.mlp(cls)  # (B, H): one exemplar token
        seen = {}
        handle = model.register_forward_pre_hook(lambda _m, _a, kw: seen.update(kw), with_kwargs=True)
        forward_logits(model, batch, obj.exemplar(batch), settings.connector)
        handle.remove()
    ids = batch.input_ids
    assert seen["inputs_embeds"].shape[1] == ids.shape[1] + 1
    for b in range(ids.shape[0]):
        after = int((ids[b] == model.config.image_token_id).nonzero().max()) + 1
        torch.testing.assert_close(seen["inputs_embeds"][b, after], want[b], rtol=1e-5, atol=1e-6)


def test_variants_stay_available_by_config(tiny_vlm_path):
    """Full LLM tuning and a trained vision encoder remain switches (lora.enabled=false, freeze_vision=false)."""
    from posttrain.optim import module_group
    from posttrain.vitask import freeze_groups, load_vlm

    cfg = TrainConfig(model=tiny_vlm_path, method="vitask", lora={"enabled": False}, freeze_vision=False)
    model = load_vlm(cfg, tiny_vlm_path)
    names = freeze_groups(model, cfg)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert {module_group(n) for n in names} == {"vision", "projector", "language"}
    frozen = freeze_groups(load_vlm(cfg, tiny_vlm_path), cfg.model_copy(update={"freeze_vision": None}))
    assert "vision" not in {module_group(n) for n in frozen}


def test_negatives_are_resampled_per_epoch_with_a_seed(processor):
    """Paper: the negative is the image of another sample with the same instruction and a different answer;
    here drawn by seeded sampling, afresh each epoch (same seed -> same draws)."""
    data = [{"id": f"r{i}", "images": [image(10 + 20 * i)],
             "messages": messages([("Which class?", ["a", "b", "c", "d"][i % 4])])} for i in range(8)]
    ds = VITaskDataset(data, processor, EncodeOptions(max_length=256), seed=3)
    draws = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i, j in enumerate(ds.negatives):
            assert j is not None and ds.turns[j].response != ds.turns[i].response
        draws.append(list(ds.negatives))
    assert len({tuple(d) for d in draws}) > 1
    again = VITaskDataset(data, processor, EncodeOptions(max_length=256), seed=3)
    again.set_epoch(4)
    assert again.negatives == draws[4]


def test_lora_on_the_llm_with_frozen_vision(tmp_path, tiny_vlm_path):
    """Paper recipe: frozen vision encoder, LoRA on the LLM (adapters only on language-model modules)."""
    from safetensors.torch import load_file

    from posttrain.optim import module_group
    from posttrain.vitask import load_vlm, train

    data = tmp_path / "data"
    data.mkdir()
    q = "Is this scan normal or abnormal?"
    write_dataset(str(data / "part-0.parquet"), [
        {"id": f"s{i}", "images": [image(20 + 200 * (i % 2) + 3 * i)],
         "messages": messages([(q, "abnormal" if i % 2 else "normal")])} for i in range(4)])
    # lora.enabled and freeze_vision unset: the method's defaults, which for vitask are the paper's
    cfg = TrainConfig(model=tiny_vlm_path, method="vitask", learning_rate=2e-3, batch_size=4, lr_scheduler="constant",
                      warmup_ratio=0.0, max_length=256, use_gpu=False, vitask=VITaskSettings(tsm=resolve_model("tiny://tsm")))
    peft_model = load_vlm(cfg, tiny_vlm_path)
    lora = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora and all(module_group(n) == "language" for n in lora)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not any(module_group(n) == "vision" for n in trainable)
    assert all("lora_" in n or module_group(n) == "projector" for n in trainable)
    train(cfg, data, tmp_path / "out")
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    base = load_file(f"{tiny_vlm_path}/model.safetensors")
    assert set(saved) == set(base)  # merged: a plain model
    assert all(torch.equal(saved[k], base[k]) for k in base if module_group(k) == "vision")
    assert any(not torch.equal(saved[k], base[k]) for k in base if "text_model" in k)
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
