"""Slot-word substitution: general-world training text whose attribute words are swapped, consistently within one
example, for other attribute words drawn at random, so the image and word statistics stop predicting the answer
and the only way to it is to read the context (the caption for the synthesizer, the informative answer for the
judge). Copying from the context is what both models must do on domain text they never trained on.

Two pools: `GENERAL_VALUES`, the general world's own attribute words, and `SWAP_POOL`, those plus the domain's
one-word attribute values. Copying is learned per token: a word whose embedding never took part in it is not
copied (the judge probe matched swapped general words at 89-95% per label but domain words at 24-56%), so the
wider pool lets the models learn to *move* domain words. It carries no domain fact: the words land in random
slots of general sentences, never in a domain sentence or next to a domain image.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

from pipelines.experiments.miniworld import domain, worlds

GENERAL_VALUES: tuple[str, ...] = (*worlds.STYLES, *worlds.SCENES, *worlds.KINDS, *worlds.COLORS)
SWAP_POOL: tuple[str, ...] = GENERAL_VALUES + tuple(
    w for w in (*domain.MODALITIES, *domain.REGIONS, *domain.KINDS) if " " not in w and "-" not in w)
_ANY_VALUE = re.compile(r"\b(" + "|".join(map(re.escape, GENERAL_VALUES)) + r")\b", re.IGNORECASE)


def substitute(texts: Mapping[str, str], rng: random.Random, pool: Sequence[str] = SWAP_POOL) -> dict[str, str]:
    """`texts` with every attribute word replaced by a random pool word, the same word for the same value
    everywhere in the example and distinct values kept distinct (so labels and answers stay right)."""
    found = list(dict.fromkeys(m.group(1).lower() for t in texts.values() for m in _ANY_VALUE.finditer(t)))
    if not found:
        return dict(texts)
    mapping = dict(zip(found, rng.sample(list(pool), len(found)), strict=True))

    def swap(m: re.Match[str]) -> str:
        word = mapping[m.group(1).lower()]
        return word[0].upper() + word[1:] if m.group(1)[0].isupper() else word

    return {k: _ANY_VALUE.sub(swap, t) for k, t in texts.items()}
