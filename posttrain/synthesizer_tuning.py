"""AdaMLLM stage A: tune a VLM into a visual instruction synthesizer from seed data (arXiv 2411.19930).

Seed rows (Parquet): `id`, `images` (one image), `caption`, `qa` (list of {instruction, precise,
informative}; an empty answer leaves its turn out). Rows that already carry `messages` in the layout
below are used as they are. The conversation, rendered with the model's own chat template:

    user:      <image> Describe the image.                          (masked)
    assistant: {caption}                                             (masked)
    user:      Answer with a precise response.\\n{instruction}       (trained)
    assistant: {precise answer}                                      (trained)
    user:      Answer with an informative response.\\n{instruction}  (trained)
    assistant: {informative answer}                                  (trained)
    ...        (pairs in a seeded random order, as in the published recipe)

At synthesis time the synth stage renders the first two turns and the model writes the rest, so every
token after the caption turn (role markers, hints and instructions included) is a training target, and
the caption turn is context only. The tokenizer's EOS is appended after the last turn and trained too
(reference: bigai-ai/QA-Synthesizer llava/train/train.py `preprocess_llama3`, `+ tokenizer.eos_token`), so
the tuned synthesizer stops by itself. A fraction `blank_image_fraction` of images (seeded by row id) is
replaced by a blank white image of the same size, so the synthesizer also learns from the caption alone.
The tuned model is saved like any SFT run: `synth.model=<out_dir>` loads it.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from pipelines.core.contract import messages
from posttrain.encoding import EncodeOptions
from posttrain.sft import SFTRecipe

CAPTION_HINT = "Describe the image."
PRECISE_HINT = "Answer with a precise response."
INFORMATIVE_HINT = "Answer with an informative response."
HINT_SEPARATOR = "\n"


def synthesizer_messages(caption: str, qa: list[dict[str, Any]], seed: int | str) -> list[dict[str, Any]]:
    """The synthesizer-tuning conversation (see module docstring) for one image (pure)."""
    pairs = []
    for t in qa:
        for hint, key in ((PRECISE_HINT, "precise"), (INFORMATIVE_HINT, "informative")):
            if t.get(key):
                pairs.append((f"{hint}{HINT_SEPARATOR}{t['instruction']}", t[key]))
    random.Random(str(seed)).shuffle(pairs)
    return messages([(CAPTION_HINT, caption), *pairs])


def is_blank(row_id: str, fraction: float, seed: int) -> bool:
    """Seeded per-row choice of the images replaced by a blank one."""
    return random.Random(f"blank:{seed}:{row_id}").random() < fraction


class SynthesizerTuningRecipe(SFTRecipe):
    """SFT with labels on everything after the caption turn and some images blanked."""

    def encode_options(self) -> EncodeOptions:
        opts = super().encode_options()
        opts.train_after_turn = 1  # message 1 is the caption answer
        opts.append_eos = True  # a trained EOS after the last turn, as the reference recipe
        return opts

    def message_transform(self):
        seed = self.cfg.seed

        def transform(row: dict[str, Any], messages: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
            if messages:
                return messages
            return synthesizer_messages(row["caption"], row.get("qa") or [], f"{seed}:{row.get('id', '')}")

        return transform

    def image_transform(self):
        fraction, seed = self.cfg.blank_image_fraction, self.cfg.seed

        def transform(row: dict[str, Any], images: list[Image.Image]) -> list[Image.Image]:
            if not is_blank(str(row.get("id", "")), fraction, seed):
                return images
            return [Image.new("RGB", im.size, "white") for im in images]

        return transform
