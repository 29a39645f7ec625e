"""Helpers the sample domains share: table loading, seeded picks, caption wording, drawing boxes."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import yaml

Rng = np.random.Generator
POSITIONS = {  # anchor (x, y) as fractions of the image
    "upper left": (0.32, 0.32), "upper right": (0.68, 0.32), "center": (0.5, 0.5),
    "lower left": (0.32, 0.68), "lower right": (0.68, 0.68),
}
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
    "sixteen seventeen eighteen nineteen twenty".split()


def load_table(domain: str) -> dict[str, Any]:
    """The data tables of a domain (`tables/<domain>.yaml`; YAML mappings keep their order)."""
    text = (resources.files("pipelines.sample_data.tables") / f"{domain}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def rgb(value: list[int] | None) -> tuple[int, ...] | None:
    """A YAML colour list as the tuple PIL and the colour comparisons expect."""
    return None if value is None else tuple(int(c) for c in value)


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def pick(rng: Rng, options: list | tuple) -> Any:
    return options[int(rng.integers(len(options)))]


def article(word: str) -> str:
    w = word.lower()
    vowel = w[0] in "aeiou8" or w.startswith(("x-", "mri", "11 ", "18 "))  # "an 8 mm", "an 18 mm"
    return "an" if vowel else "a"


def join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def box(s: int, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """A box given in fractions of an s-pixel square image, in pixels."""
    return (x0 * s, y0 * s, x1 * s, y1 * s)
