"""TSM plug-in: feature extraction from the tiny ViT classifier and from an import path; classifier training."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from posttrain.tsm import TaskSpecificModel, train_classifier


@pytest.fixture(scope="module")
def tiny_tsm_path() -> str:
    from pipelines.refs import resolve_model

    return resolve_model("tiny://tsm")


def _images(n: int) -> tuple[list[Image.Image], list[str]]:
    """Trivially separable: dark vs bright, with a little per-image variation."""
    images, labels = [], []
    for i in range(n):
        bright = i % 2 == 1
        v = 200 + (i * 7) % 50 if bright else 10 + (i * 7) % 40
        images.append(Image.new("RGB", (40, 40), (v, v, (v + 30) % 256)))
        labels.append("bright" if bright else "dark")
    return images, labels


class _MeanColour(nn.Module):
    """A plain torch TSM: per-channel mean -> linear, 5 features."""

    image_size = 16

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 5)

    def forward(self, pixels):
        return self.proj(pixels.mean(dim=(2, 3)))


def test_hf_classifier_features_pooled_cls_logits(tiny_tsm_path):
    tsm = TaskSpecificModel.load(tiny_tsm_path)
    images, _ = _images(3)
    feats = tsm.features(images)
    assert feats.shape == (3, 32) and tsm.feature_dim == 32
    assert not feats.requires_grad and all(not p.requires_grad for p in tsm.parameters())
    # "pooled" is the head input: the head applied to it reproduces the classifier's logits.
    logits = TaskSpecificModel.load(tiny_tsm_path, feature="logits").features(images)
    assert logits.shape == (3, 4)
    torch.testing.assert_close(tsm.backbone.classifier(feats), logits)
    cls = TaskSpecificModel.load(tiny_tsm_path, feature="cls").features(images)
    assert cls.shape == (3, 32)
    # Different images give different features (the TSM actually looks at the pixels).
    assert not torch.allclose(feats[0], feats[1])


def test_tsm_stays_in_eval_mode_when_frozen(tiny_tsm_path):
    tsm = TaskSpecificModel.load(tiny_tsm_path)
    tsm.train()
    assert not tsm.backbone.training
    trainable = TaskSpecificModel.load(tiny_tsm_path, frozen=False)
    trainable.train()
    assert trainable.backbone.training
    assert trainable.features(_images(2)[0]).requires_grad


def test_import_path_module(monkeypatch):
    import sys
    import types

    mod = types.ModuleType("fake_tsm_pkg")
    mod.make = _MeanColour
    monkeypatch.setitem(sys.modules, "fake_tsm_pkg", mod)
    tsm = TaskSpecificModel.load("fake_tsm_pkg:make")
    assert isinstance(tsm.backbone, _MeanColour)
    feats = tsm.features(_images(4)[0])
    assert feats.shape == (4, 5) and tsm.feature_dim == 5
    direct = tsm.features(torch.zeros(2, 3, 16, 16))
    torch.testing.assert_close(direct, tsm.backbone.proj.bias.expand(2, 5))


def test_import_path_that_is_not_a_module_fails(monkeypatch):
    import sys
    import types

    mod = types.ModuleType("fake_tsm_bad")
    mod.thing = lambda: 42
    monkeypatch.setitem(sys.modules, "fake_tsm_bad", mod)
    with pytest.raises(TypeError):
        TaskSpecificModel.load("fake_tsm_bad:thing")


def test_train_classifier_accuracy_rises(tiny_tsm_path, tmp_path):
    images, labels = _images(16)
    out = train_classifier(tiny_tsm_path, images, labels, epochs=6, lr=1e-2, output_dir=tmp_path / "tsm", batch_size=8)
    stats = json.loads((tmp_path / "tsm" / "tsm_train.json").read_text())
    assert stats["id2label"] == {"0": "bright", "1": "dark"}
    assert stats["epoch_losses"][-1] < stats["epoch_losses"][0]
    assert stats["accuracy_after"] == 1.0
    assert stats["accuracy_after"] > stats["accuracy_before"]
    # The saved model loads as a TSM with a 2-way head and classifies held-out images correctly.
    tsm = TaskSpecificModel.load(out, feature="logits")
    test_images, test_labels = _images(6)
    pred = tsm.features(test_images).argmax(-1).tolist()
    assert [stats["id2label"][str(p)] for p in pred] == test_labels


def test_train_classifier_rejects_mismatched_inputs(tiny_tsm_path, tmp_path):
    with pytest.raises(ValueError):
        train_classifier(tiny_tsm_path, _images(3)[0], ["a"], epochs=1, lr=1e-3, output_dir=tmp_path)
