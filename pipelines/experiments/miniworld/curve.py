"""Held-out copy accuracy while the synthesizer trains: does it read its caption yet?

Copying from the context appears in a sudden turn after enough steps (../shared/probes), so the synthesizer's
build logs a curve: every `every` optimizer steps, teacher-forced accuracy on the answer tokens that only the
caption can supply, on two held-out sets:

- ``general_copy``: caption-only general rows with swapped attribute words (`data.copy_rows`, another seed);
  scored tokens are the swapped words.
- ``domain``: domain captions with ground-truth domain tasks (`domain.domain_tasks`) in the synthesizer's
  layout; scored tokens are the domain's own words (modality, region, finding kinds, densities).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch

from posttrain.collate import Collator
from posttrain.dataset import SFTDataset
from posttrain.synthesizer_tuning import SynthesizerTuningRecipe

log = logging.getLogger(__name__)


def probe_rows(n: int) -> dict[str, tuple[list[dict[str, Any]], list[str]]]:
    """{name: (held-out seed rows, the words whose tokens are scored)}."""
    from pipelines.experiments.miniworld import data, domain, slots
    from pipelines.fixtures.sample_data import make_item, png_bytes

    general = data.copy_rows(n, seed=data.COPY_PROBE_SEED)
    rng = random.Random(data.COPY_PROBE_SEED)
    dom = []
    for i in range(n):
        attrs, img, cap = make_item("biomed", i, data.COPY_PROBE_SEED, image_size=64)
        tasks = rng.sample(domain.domain_tasks(attrs, rng), 2)
        dom.append({"id": f"dprobe-{i}", "images": [{"bytes": png_bytes(img), "path": None}], "caption": cap,
                    "qa": [{k: t[k] for k in ("instruction", "precise", "informative")} for t in tasks]})
    # words of the domain only (positions are shared with the general world, so they would flatter the score)
    domain_words = [w for v in (*domain.MODALITIES, *domain.REGIONS, *domain.KINDS, *domain.DENSITIES)
                    for w in v.replace("-", " ").split() if len(w) > 1]
    return {"general_copy": (general, list(slots.SWAP_POOL)), "domain": (dom, domain_words)}


def scored_ids(tokenizer: Any, words: list[str]) -> set[int]:
    """Token ids of the words as they appear mid-sentence (with and without a leading space), first token only."""
    ids = set()
    for w in words:
        for form in (w, " " + w, " " + w.capitalize()):
            toks = tokenizer(form, add_special_tokens=False)["input_ids"]
            if toks:
                ids.add(toks[0])
    return ids


class CopyCurveRecipe(SynthesizerTuningRecipe):
    """The synthesizer recipe plus the held-out copy-accuracy curve (`self.curve`)."""

    every: int = 250
    n_probe: int = 48  # held-out rows per probe set

    def setup(self) -> None:
        super().setup()
        tok = getattr(self.processor, "tokenizer", self.processor)
        self.curve: list[dict[str, Any]] = []
        self._probes = {}
        for name, (rows, words) in probe_rows(self.n_probe).items():
            ds = SFTDataset(rows, self.processor, self.encode_options(), transform=self.message_transform())
            self._probes[name] = (ds, scored_ids(tok, words))
        self._collate = Collator(pad_token_id=tok.pad_token_id)

    @torch.no_grad()
    def copy_accuracy(self, name: str) -> float:
        ds, ids = self._probes[name]
        hits = total = 0
        self.model.eval()
        try:
            for start in range(0, len(ds), 16):
                batch = self._collate([ds[i] for i in range(start, min(start + 16, len(ds)))])
                logits = self.model(**self.model_inputs(batch)).logits[:, :-1]
                target = batch["labels"][:, 1:].to(logits.device)
                mask = torch.zeros_like(target, dtype=torch.bool)
                for t in ids:
                    mask |= target == t
                hits += int((logits.argmax(-1)[mask] == target[mask]).sum())
                total += int(mask.sum())
        finally:
            self.model.train()
        return hits / max(total, 1)

    def after_optimizer_step(self) -> None:
        step = self.step + 1  # the base class counts the step after this hook
        if step % self.every and step != self.total_steps:
            return
        point = {"step": step, **{name: round(self.copy_accuracy(name), 4) for name in self._probes}}
        self.curve.append(point)
        log.info("copy curve %s", point)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.experiments.miniworld.curve OUT [--copy N] [--epochs E] [--lr LR] [--every K]`: tune the
    cached generalist on the synthesizer seed rows plus N swapped caption-only rows and print the copy curve
    (a probe of a candidate synthesizer recipe; nothing is cached or shipped)."""
    import argparse
    import json
    from pathlib import Path

    from pipelines.experiments.miniworld import data, models
    from posttrain.config import TrainConfig

    ap = argparse.ArgumentParser(prog="python -m pipelines.experiments.miniworld.curve", description=main.__doc__)
    ap.add_argument("out", help="work folder (seed data, the tuned model)")
    ap.add_argument("--copy", type=int, default=2000, help="swapped caption-only rows beside the seed rows")
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=100, help="optimizer steps between curve points")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = data.write_seed_data(out / "seed.parquet", models.N_SEED, n_copy=a.copy)
    cfg = TrainConfig(method="synthesizer", model=str(models.ensure("generalist")), max_length=512, use_gpu=False,
                      warmup_ratio=0.05, lr_scheduler="cosine", seed=models.SEED, save_every_steps=100_000,
                      keep_checkpoints=1, blank_image_fraction=0.1, epochs=a.epochs, learning_rate=a.lr,
                      batch_size=models.SYNTH_TUNE["batch_size"])
    recipe = CopyCurveRecipe(cfg, [str(seed)], out / "model")
    recipe.every = a.every
    recipe.setup()
    try:
        recipe.curve.append({"step": 0, **{k: round(recipe.copy_accuracy(k), 4) for k in recipe._probes}})
        recipe.train()
    finally:
        recipe.cleanup()
    print(json.dumps(recipe.curve))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
