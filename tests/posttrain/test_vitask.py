"""VITask on the tiny VLM + tiny TSM: exemplar injection, negatives, the two training stages, eval hooks."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from posttrain.config import VITaskSettings
from posttrain.losses import IGNORE_INDEX
from posttrain.tsm import TaskSpecificModel
from posttrain.vitask import (
    ExemplarConnector,
    VITaskObjective,
    align_negative_logits,
    collate,
    find_negatives,
    forward_logits,
    generate_without_tsm,
    incomplete_instruction_variants,
    make_batches,
    prepare_examples,
    train_vitask,
)

INSTR = "Is this scan normal or abnormal?"


@pytest.fixture(scope="module")
def vlm_path(tiny_vlm_path) -> str:
    return tiny_vlm_path


@pytest.fixture(scope="module")
def processor(vlm_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(vlm_path)


def _model(path):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def model(vlm_path):
    """Read-only model for the forward tests (training tests load their own copy)."""
    return _model(vlm_path)


@pytest.fixture(scope="module")
def tsm():
    return TaskSpecificModel.load("tiny://tsm")


def _image(v: int) -> Image.Image:
    return Image.new("RGB", (40, 40), (v, 255 - v, (3 * v) % 256))


def _rows(n: int = 4) -> list[dict]:
    """Dark images are 'normal', bright ones 'abnormal'; every row shares the instruction."""
    return [
        {"id": f"r{i}", "image": _image(20 + 200 * (i % 2) + i), "instruction": INSTR,
         "response": "abnormal" if i % 2 else "normal"}
        for i in range(n)
    ]


def _batch(processor, tsm, n=4):
    rows = _rows(n)
    return collate(processor, [(r["image"], r["instruction"], r["response"]) for r in rows], tsm=tsm)


# ----------------------------------------------------------------------------------------- data


def test_find_negatives_same_instruction_other_response_deterministic():
    instr = ["q1", "q1", "q1", "q2", "q2", "q3"]
    resp = ["a", "a", "b", "x", "x", "z"]
    neg = find_negatives(instr, resp)
    assert neg == [2, 2, 0, None, None, None]
    for i, j in enumerate(neg):
        if j is not None:
            assert instr[j] == instr[i] and resp[j] != resp[i]
    assert find_negatives(instr, resp) == neg
    # Case and surrounding space do not make a response "different".
    assert find_negatives(["q", "q"], ["Normal", " normal "]) == [None, None]


def test_prepare_examples_rejects_and_counts_bad_rows():
    good = _rows(2)
    buf = io.BytesIO()
    _image(5).save(buf, format="PNG")
    rows = good + [
        {"id": "png", "image": buf.getvalue(), "instruction": INSTR, "response": "normal"},
        {"id": "noimg", "image": b"", "instruction": INSTR, "response": "normal"},
        {"id": "junk", "image": b"not an image", "instruction": INSTR, "response": "normal"},
        {"id": "noresp", "image": _image(1), "instruction": INSTR, "response": "  "},
        {"id": "noinstr", "image": _image(1), "instruction": "", "response": "normal"},
    ]
    examples, rejects = prepare_examples(rows)
    assert [e.id for e in examples] == ["r0", "r1", "png"]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "noimg": "missing_image", "junk": "unreadable_image", "noresp": "empty_response", "noinstr": "empty_instruction"
    }
    assert all(r["stage"] == "vitask" for r in rejects)
    assert len(examples) + len(rejects) == len(rows)


def test_collate_labels_only_response_tokens(processor, tsm):
    batch = _batch(processor, tsm, 2)
    tok = processor.tokenizer
    for b, want in enumerate(["normal", "abnormal"]):
        ids = batch.labels[b][batch.labels[b] != IGNORE_INDEX]
        assert tok.decode(ids).strip() == f"{want}<end_of_utterance>"
    # Padding is masked out of attention and labels alike.
    assert bool(((batch.attention_mask == 0) <= (batch.labels == IGNORE_INDEX)).all())
    assert batch.tsm_pixels.shape == (2, 3, 32, 32)


# -------------------------------------------------------------------------------------- injection


def test_inputs_embeds_path_equals_normal_forward_when_exemplar_is_zero(model, processor, tsm):
    batch = _batch(processor, tsm)
    with torch.no_grad():
        ref = model(**batch.model_inputs()).logits
        plain = forward_logits(model, batch)
        zero = forward_logits(model, batch, torch.zeros(4, model.config.text_config.hidden_size), "add")
        connector = ExemplarConnector(tsm.feature_dim, model.config.text_config.hidden_size)
        torch.nn.init.zeros_(connector.mlp[2].weight)
        torch.nn.init.zeros_(connector.mlp[2].bias)
        through_connector = forward_logits(model, batch, connector(tsm.features(batch.tsm_pixels)), "add")
    torch.testing.assert_close(plain, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zero, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(through_connector, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["add", "append"])
def test_exemplar_changes_logits_only_after_the_image(model, processor, tsm, mode):
    batch = _batch(processor, tsm)
    settings = VITaskSettings(connector=mode, connector_tokens=2)
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, settings)
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
    rows = _rows(3) + [{"id": "lonely", "image": _image(99), "instruction": "Other question?", "response": "x"}]
    examples, _ = prepare_examples(rows)
    negatives = find_negatives([e.instruction for e in examples], [e.response for e in examples])
    assert negatives == [1, 2, 1, None]
    batch, neg, neg_rows = make_batches(examples, negatives, processor, tsm, [0, 1, 2, 3])
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, VITaskSettings())
    with torch.no_grad():
        out = obj(model, batch, stage=2, negative=neg, negative_rows=neg_rows)
    assert set(out.components) == {"van", "ep", "rda", "crt"}
    assert out.logged["crt_used"] == 3 and out.logged["crt_without_negative"] == 1
    assert out.crt.loss.item() > 0
    want = sum(out.logged[k] * w for k, w in obj.weights(2).items())
    assert out.logged["total"] == pytest.approx(want, rel=1e-5)


# -------------------------------------------------------------------------------------- training


def _fixed_loss(obj, model, batch) -> float:
    with torch.no_grad():
        return obj(model, batch, stage=1).total.item()


def test_two_stage_training(vlm_path, processor, tsm):
    model = _model(vlm_path)
    rows = _rows(4) + [{"id": "bad", "image": b"", "instruction": INSTR, "response": "normal"}]
    settings = VITaskSettings(rda_weight=0.5, crt_weight=1.0)
    obj = VITaskObjective(tsm, model.config.text_config.hidden_size, settings)
    batch = _batch(processor, tsm)
    before = _fixed_loss(obj, model, batch)

    # Stage 1 only: connector + VLM learn, the combined loss on the fixed batch falls.
    res = train_vitask(model, processor, tsm, rows, settings, lr=2e-3, batch_size=4, stage1_steps=4, stage2_steps=0,
                       objective=obj)
    after_stage1 = _fixed_loss(obj, model, batch)
    assert after_stage1 < before - 0.5
    assert [r["id"] for r in res.rejects] == ["bad"] and res.n_examples == 4 and res.n_without_negative == 0
    assert [h["stage"] for h in res.history] == [1] * 4
    assert all({"van", "ep", "rda", "total"} <= set(h) and "crt" not in h for h in res.history)

    # Stage 2: the connector stays bit-identical, the VLM keeps changing, CRT is logged with its counts.
    conn = {k: v.clone() for k, v in obj.connector.state_dict().items()}
    vlm = {k: v.clone() for k, v in model.state_dict().items()}
    res2 = train_vitask(model, processor, tsm, rows, settings, lr=2e-3, batch_size=4, stage1_steps=0, stage2_steps=2,
                        objective=obj)
    assert all(torch.equal(conn[k], v) for k, v in obj.connector.state_dict().items())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(vlm[k], v)]
    assert any("text_model" in k for k in changed) and any("vision_model" in k for k in changed)
    assert [h["stage"] for h in res2.history] == [2, 2]
    assert all(h["crt_used"] == 4 and h["crt_without_negative"] == 0 and h["crt"] > 0 for h in res2.history)


def test_too_long_rows_are_rejected_not_truncated(vlm_path, processor, tsm):
    rows = _rows(2) + [{"id": "long", "image": _image(7), "instruction": INSTR, "response": "normal " * 40}]
    res = train_vitask(_model(vlm_path), processor, tsm, rows, VITaskSettings(), batch_size=2, stage1_steps=1,
                       stage2_steps=0, max_length=40)
    assert res.n_examples == 2
    assert [(r["id"], r["reason"]) for r in res.rejects] == [("long", "too_long")]


def test_train_vitask_all_rows_bad_fails_loudly(vlm_path, processor, tsm):
    with pytest.raises(ValueError, match="no usable rows"):
        train_vitask(_model(vlm_path), processor, tsm, [{"id": "x", "image": b"", "instruction": "q", "response": "a"}],
                     VITaskSettings(), stage1_steps=1, stage2_steps=0)


# ------------------------------------------------------------------------------------- evaluation


def test_generate_without_tsm_matches_plain_greedy(model, processor):
    images = [_image(10), _image(230)]
    got = generate_without_tsm(model, processor, images, [INSTR, "What is shown?"], max_new_tokens=4)
    assert len(got) == 2 and all(isinstance(t, str) for t in got)
    # Batched left-padded generation equals one-by-one generation.
    single = [generate_without_tsm(model, processor, [im], [q], max_new_tokens=4)[0]
              for im, q in zip(images, [INSTR, "What is shown?"], strict=True)]
    assert got == single
    assert processor.tokenizer.padding_side == "left"  # restored to what the processor had


def test_incomplete_instruction_variants():
    labels = ["normal", "abnormal", "benign tumour"]
    v = incomplete_instruction_variants("Look at the scan. Is it normal or abnormal? Answer with one word.", labels)
    assert v["full"] == "Look at the scan. Is it normal or abnormal? Answer with one word."
    assert v["no_label_list"] == "Look at the scan. Is it? Answer with one word."
    assert v["first_sentence"] == "Look at the scan."
    assert v["no_last_sentence"] == "Look at the scan. Is it normal or abnormal?"
    assert incomplete_instruction_variants("Classify this image as normal, abnormal or benign tumour.", labels)[
        "no_label_list"] == "Classify this image."
    assert incomplete_instruction_variants("Options: normal, abnormal. Which one fits?", labels)[
        "no_label_list"] == "Which one fits?"
    # One label named is not a label list: kept as is.
    assert incomplete_instruction_variants("Is the tissue normal? Describe it.", labels)[
        "no_label_list"] == "Is the tissue normal? Describe it."
