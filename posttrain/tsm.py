"""Task-specific model (TSM) plug-in for VITask: any image model that yields one feature vector per image.

Two sources:
- an image classifier loadable by `AutoModelForImageClassification` (hub id or local path; `tiny://tsm` is resolved to a path by the CLI edge);
  the feature is the input of its classification head ("pooled", captured by a forward hook on the head,
  so it works for ViT, ConvNeXt, ResNet, ... alike), the first token of the last hidden state ("cls"),
  the token mean ("mean"), or the class logits ("logits");
- a torch module named by import path "pkg.module:attr" (an `nn.Module` instance, or a zero-argument
  factory/class returning one) that maps pixel_values (B, 3, H, W) to (B, D).

`train_classifier` fine-tunes a classifier TSM on the labelled split of a dataset.
"""

from __future__ import annotations

import importlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)

FeatureKind = Literal["pooled", "cls", "mean", "logits"]


def _import_attr(ref: str) -> object:
    module_name, _, attr = ref.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _is_import_path(ref: str) -> bool:
    # "pkg.module:attr" - a Windows drive ("C:\\x") or a URL-like tiny:// ref is not one.
    head, sep, tail = ref.partition(":")
    return bool(sep) and bool(tail) and not tail.startswith("/") and head.replace(".", "").replace("_", "").isalnum()


def simple_pixels(images: Sequence[Image.Image], size: int, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """RGB PIL images -> (B, 3, size, size) float tensor, resized bilinearly and normalized (no torchvision)."""
    arrs = [np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) for im in images]
    x = torch.from_numpy(np.stack(arrs) / np.float32(255.0)).permute(0, 3, 1, 2)
    return (x - mean) / std


class TaskSpecificModel(nn.Module):
    """A frozen-by-default image model with `features(pixel_values | list[PIL]) -> (B, D)`."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature: FeatureKind = "pooled",
        image_processor: object | None = None,
        image_size: int = 224,
        frozen: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature = feature
        self.image_processor = image_processor
        self.image_size = image_size
        self.frozen = frozen
        self._is_hf = hasattr(backbone, "config") and hasattr(backbone.config, "num_labels")
        if feature != "logits" and feature != "pooled" and not self._is_hf:
            raise ValueError(f"feature={feature!r} needs a transformers classifier; a plain module returns its output")
        if frozen:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()
        self._feature_dim: int | None = None

    @classmethod
    def load(cls, ref: str, *, feature: FeatureKind = "pooled", frozen: bool = True) -> TaskSpecificModel:
        """From a hub id / local path (image classifier) or an import path "pkg.module:attr"."""
        if _is_import_path(ref):
            obj = _import_attr(ref)
            module = obj if isinstance(obj, nn.Module) else obj()  # type: ignore[operator]
            if not isinstance(module, nn.Module):
                raise TypeError(f"{ref} is not an nn.Module nor a factory of one")
            size = int(getattr(module, "image_size", 224))
            return cls(module, feature="pooled", image_size=size, frozen=frozen)
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        path = ref
        model = AutoModelForImageClassification.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
        return cls(model, feature=feature, image_processor=processor, frozen=frozen)

    def train(self, mode: bool = True) -> TaskSpecificModel:
        # A frozen TSM stays in eval mode (dropout/batch-norm statistics) even inside a training module.
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images the way the backbone expects."""
        if self.image_processor is not None:
            return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return simple_pixels(images, self.image_size)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.backbone.parameters(), None)
        return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)

    def features(self, images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) pixel values or B PIL images -> (B, D) features (no grad when frozen)."""
        pixels = images if isinstance(images, torch.Tensor) else self.pixel_values(images)
        device, dtype = self._device_dtype()
        pixels = pixels.to(device=device, dtype=dtype)
        with torch.set_grad_enabled(not self.frozen and torch.is_grad_enabled()):
            out = self._hf_features(pixels) if self._is_hf else self.backbone(pixels)
        if out.dim() != 2:
            out = out.flatten(1)
        return out

    def _hf_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.feature == "logits":
            return self.backbone(pixel_values=pixels).logits
        if self.feature in ("cls", "mean"):
            hidden = self.backbone(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
            if hidden.dim() != 3:
                raise ValueError(f"feature={self.feature!r} needs token outputs; got shape {tuple(hidden.shape)}")
            return hidden[:, 0] if self.feature == "cls" else hidden.mean(1)
        head = _classifier_head(self.backbone)
        captured: list[torch.Tensor] = []
        # The head's input is the pooled feature, whatever pooling the architecture uses.
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.backbone(pixel_values=pixels)
        finally:
            handle.remove()
        return captured[-1]

    @property
    def feature_dim(self) -> int:
        """D, found once by running one blank image (cheap, and exact for any architecture)."""
        if self._feature_dim is None:
            blank = Image.new("RGB", (self.image_size, self.image_size))
            with torch.no_grad():
                self._feature_dim = int(self.features([blank]).shape[-1])
        return self._feature_dim


def _classifier_head(model: nn.Module) -> nn.Module:
    for name in ("classifier", "head", "fc", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(f"{type(model).__name__}: no classification head found; use feature='cls' or 'mean'")


def _label_ids(labels: Sequence[int | str]) -> tuple[list[int], dict[int, str]]:
    """Class ids in sorted label order (numeric order when every label is an int)."""
    keys = sorted(set(labels)) if all(isinstance(x, int) for x in labels) else sorted({str(x) for x in labels})
    index = {k: i for i, k in enumerate(keys)}
    ids = [index[x if isinstance(keys[0], int) else str(x)] for x in labels]
    return ids, {i: str(k) for k, i in index.items()}


def _accuracy(model: nn.Module, pixels: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(targets), batch_size):
            pred = model(pixel_values=pixels[i : i + batch_size]).logits.argmax(-1)
            correct += int((pred == targets[i : i + batch_size]).sum())
    return correct / max(1, len(targets))


def train_classifier(
    model_ref: str,
    images: Sequence[Image.Image],
    labels: Sequence[int | str],
    epochs: int,
    lr: float,
    *,
    output_dir: str | Path,
    batch_size: int = 16,
    seed: int = 0,
) -> str:
    """Fine-tune an image classifier TSM on labelled images; save it (model + image processor) and return the path.

    The head is re-sized to the label set (labels may be ints or strings; ids follow their sorted order).
    `output_dir/tsm_train.json` records the label map and the accuracy/loss before and after training.
    """
    if len(images) != len(labels) or not images:
        raise ValueError(f"need as many labels as images (>0); got {len(images)} images, {len(labels)} labels")
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    torch.manual_seed(seed)
    rng = random.Random(seed)
    ids, id2label = _label_ids(labels)
    path = model_ref
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForImageClassification.from_pretrained(
        path,
        id2label=id2label,  # sets num_labels too; passing both makes transformers warn
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
    targets = torch.tensor(ids)
    before = _accuracy(model, pixels, targets, batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    order = list(range(len(ids)))
    losses: list[float] = []
    for epoch in range(epochs):
        model.train()
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = torch.tensor(order[i : i + batch_size])
            loss = F.cross_entropy(model(pixel_values=pixels[idx]).logits, targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(order))
        log.info("tsm epoch %d: loss %.4f", epoch, losses[-1])
    after = _accuracy(model, pixels, targets, batch_size)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    stats = {"id2label": id2label, "accuracy_before": before, "accuracy_after": after, "epoch_losses": losses}
    (out / "tsm_train.json").write_text(json.dumps(stats, indent=2))
    log.info("tsm trained: accuracy %.3f -> %.3f, saved to %s", before, after, out)
    return str(out)
