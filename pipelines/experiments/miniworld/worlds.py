"""The two procedural worlds of the method check: a general world (scenes with objects) and a domain world
(radiograph-like scans from `pipelines.fixtures.sample_data`).

The general world is built to parallel the domain's caption structure, with different words, so a
synthesizer tuned on it has something to transfer:

    general: "Photo of the garden showing two objects: a 12 cm red ball in the upper left and ..."
    domain:  "X-ray of the chest showing two findings: a 12 mm high-density nodule in the upper left and ..."

style <-> modality, scene <-> body region, object kind/colour/size/position <-> finding kind/density/size/
position. Every general image carries its ground truth (`attributes`), and every question below is answered
from it, so answers are right by construction. Item i depends only on (world, seed, i).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from filters.compose import states_conclusion
from pipelines.fixtures.sample_data import POSITIONS, number_word

STYLES = ("photo", "drawing", "painting", "sketch")
SCENES = ("garden", "kitchen", "street", "beach", "room")
KINDS = ("ball", "box", "cone", "ring", "bar")
COLORS = {"red": (210, 40, 40), "blue": (40, 70, 200), "green": (40, 160, 60), "yellow": (240, 210, 40),
          "purple": (130, 50, 150), "black": (20, 20, 20), "white": (245, 245, 245), "orange": (240, 130, 20)}
SCENE_CM = 60  # image width in cm: sizes in captions follow from the drawn size
SIZE_CM = (6, 18)
COUNT_P = (0.25, 0.4, 0.25, 0.1)  # 0..3 objects, the domain's finding-count distribution
SHORT_SUFFIX = "Answer the question using a single word or phrase."  # posttrain/eval/prompts/vqa_short.txt
CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."  # .../choice.txt


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou8" or word.startswith("18 ") or word.startswith("11 ") else "a"


def sample_general(rng: np.random.Generator) -> dict[str, Any]:
    """Ground truth of one general image."""
    style, scene = STYLES[int(rng.integers(len(STYLES)))], SCENES[int(rng.integers(len(SCENES)))]
    count = int(rng.choice(4, p=COUNT_P))
    objects = []
    for pos in rng.choice(list(POSITIONS), size=count, replace=False):
        ax, ay = POSITIONS[str(pos)]
        objects.append({
            "kind": KINDS[int(rng.integers(len(KINDS)))],
            "color": list(COLORS)[int(rng.integers(len(COLORS)))],
            "size_cm": int(rng.integers(SIZE_CM[0], SIZE_CM[1] + 1)),
            "position": str(pos),
            "center": [round(ax + rng.uniform(-0.04, 0.04), 3), round(ay + rng.uniform(-0.04, 0.04), 3)],
        })
    return {"style": style, "scene": scene, "count": count, "objects": objects}


def _draw_scene(d: ImageDraw.ImageDraw, scene: str, s: int) -> None:
    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 * s, y0 * s, x1 * s, y1 * s)

    if scene == "garden":
        d.rectangle(box(0, 0, 1, 0.3), fill=(150, 200, 240))
        d.rectangle(box(0, 0.3, 1, 1), fill=(90, 170, 80))
    elif scene == "kitchen":
        n = 8
        for i in range(n):
            for j in range(n):
                d.rectangle(box(i / n, j / n, (i + 1) / n, (j + 1) / n),
                            fill=(225, 225, 225) if (i + j) % 2 else (160, 160, 170))
    elif scene == "street":
        d.rectangle(box(0, 0, 1, 1), fill=(105, 105, 110))
        for x in range(0, 8, 2):
            d.rectangle(box(x / 8, 0.48, (x + 1) / 8, 0.52), fill=(250, 250, 250))
    elif scene == "beach":
        d.rectangle(box(0, 0, 1, 0.4), fill=(60, 120, 210))
        d.rectangle(box(0, 0.4, 1, 1), fill=(235, 215, 150))
    elif scene == "room":
        d.rectangle(box(0, 0, 1, 0.7), fill=(225, 205, 170))
        d.rectangle(box(0, 0.7, 1, 1), fill=(130, 85, 45))
    else:
        raise ValueError(f"unknown scene {scene!r}")


def _draw_object(d: ImageDraw.ImageDraw, o: dict, s: int, outline: Any) -> None:
    cx, cy = o["center"][0] * s, o["center"][1] * s
    r = max(2.0, o["size_cm"] / SCENE_CM * s / 2)
    rgb = COLORS[o["color"]]
    if o["kind"] == "ball":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb, outline=outline)
    elif o["kind"] == "box":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=rgb, outline=outline)
    elif o["kind"] == "cone":
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=rgb, outline=outline)
    elif o["kind"] == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=rgb, width=max(2, int(r / 2.5)))
    elif o["kind"] == "bar":
        d.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=rgb, outline=outline)
    else:
        raise ValueError(f"unknown object kind {o['kind']!r}")


def draw_general(attrs: dict[str, Any], size: int, rng: np.random.Generator) -> Image.Image:
    """Scene background, objects, then the style's look (noise, outlines, blur, washed-out)."""
    style = attrs["style"]
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    _draw_scene(d, attrs["scene"], size)
    outline = (0, 0, 0) if style in ("drawing", "sketch") else None
    for o in attrs["objects"]:
        _draw_object(d, o, size, outline)
    if style == "painting":
        img = img.filter(ImageFilter.GaussianBlur(1.2))
    arr = np.asarray(img, dtype=np.float32)
    if style == "photo":
        arr = arr + rng.normal(0.0, 12.0, size=arr.shape)
    elif style == "sketch":
        arr = 0.35 * arr + 0.65 * 235.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _object_phrase(o: dict, variant: int) -> str:
    core = f"{o['size_cm']} cm {o['color']} {o['kind']}" if variant == 0 else \
        f"{o['color']} {o['kind']} measuring {o['size_cm']} cm"
    return f"{_article(core)} {core} in the {o['position']}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_TEMPLATES = (
    "{Style} of the {scene} showing {counted}: {objects}.",
    "{Scene} {style} with {counted}: {objects}.",
    "This {style} image of the {scene} shows {counted}. {sentences}",
    "{Objects}; {counted} in total on {a_style} {style} of the {scene}.",
)
_EMPTY = ("{Style} of the {scene} with no objects.", "{Scene} {style}: no objects.",
          "This {style} image of the {scene} shows no objects.")


def caption_general(attrs: dict[str, Any], rng: np.random.Generator) -> str:
    st, sc, n = attrs["style"], attrs["scene"], attrs["count"]
    fields = {"style": st, "Style": st.capitalize(), "scene": sc, "Scene": sc.capitalize(), "a_style": _article(st)}
    if n == 0:
        return _EMPTY[int(rng.integers(len(_EMPTY)))].format(**fields)
    phrases = [_object_phrase(o, int(rng.integers(2))) for o in attrs["objects"]]
    joined = _join(phrases)
    return _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(
        counted=f"{number_word(n)} object{'s' if n > 1 else ''}", objects=joined,
        Objects=joined[0].upper() + joined[1:], sentences=" ".join(f"There is {p}." for p in phrases), **fields)


def make_general(index: int, seed: int = 0, image_size: int = 64) -> tuple[dict, Image.Image, str]:
    """(attributes, image, caption) of general item `index`."""
    rng = np.random.default_rng([seed, zlib.crc32(b"general"), index])
    attrs = sample_general(rng)
    draw_rng, cap_rng = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(2))
    return attrs, draw_general(attrs, image_size, draw_rng), caption_general(attrs, cap_rng)


# ---------------------------------------------------------------------------------------- questions
def general_tasks(attrs: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """Instruction tasks answered by the attributes: `{instruction, precise, informative, kind}`.

    `kind` is "open" or "closed" (yes/no). The informative answer reasons from what the image shows and
    ends with a sentence that states the precise answer (what the consistency judge checks).
    """
    st, sc, objs, n = attrs["style"], attrs["scene"], attrs["objects"], attrs["count"]
    seen = _join([_object_phrase(o, 0) for o in objs]) if objs else "no objects"
    counted = f"{number_word(n)} object{'s' if n != 1 else ''}"
    kinds = sorted({o["kind"] for o in objs})
    out = [
        dict(instruction="What kind of image is this?", precise=st, kind="open",
             informative=f"The image is {_article(st)} {st} of the {sc} with {counted}. It is {_article(st)} {st}."),
        dict(instruction="Which scene is shown in this image?", precise=sc, kind="open",
             informative=f"The {st} shows the {sc} with {counted}. The scene is the {sc}."),
        dict(instruction="What objects are seen in the image?", precise=", ".join(kinds) if kinds else "none",
             kind="open", informative=f"The {st} shows {seen}. The objects are {', '.join(kinds) if kinds else 'none'}."),
        dict(instruction="Are there any objects in this image?", precise="Yes" if n else "No", kind="closed",
             informative=f"The {st} of the {sc} shows {seen}. "
                         + (f"So yes, there are {counted}." if n else "So no, there are no objects.")),
        dict(instruction="How many objects are there?", precise=str(n), kind="open",
             informative=f"The image shows {seen}. There are {n} objects."),
    ]
    kind = rng.choice(kinds) if kinds and rng.random() < 0.5 else rng.choice(KINDS)
    there = kind in kinds
    out.append(dict(instruction=f"Is there {_article(kind)} {kind} in this image?", precise="Yes" if there else "No",
                    kind="closed", informative=f"The image shows {seen}. "
                    + (f"So yes, there is {_article(kind)} {kind}." if there else f"So no, there is no {kind}.")))
    style = st if rng.random() < 0.5 else rng.choice(STYLES)
    out.append(dict(instruction=f"Is this {_article(style)} {style}?", precise="Yes" if style == st else "No",
                    kind="closed", informative=f"The image is {_article(st)} {st} of the {sc}. "
                    + ("So yes." if style == st else f"So no, it is not {_article(style)} {style}.")))
    single = [o for o in objs if sum(p["kind"] == o["kind"] for p in objs) == 1]
    if single:
        o = rng.choice(single)
        desc = _object_phrase(o, 0)
        out += [
            dict(instruction=f"Where is the {o['kind']} located?", precise=o["position"], kind="open",
                 informative=f"There is {desc}. The {o['kind']} is in the {o['position']}."),
            dict(instruction=f"What color is the {o['kind']}?", precise=o["color"], kind="open",
                 informative=f"There is {desc}. The {o['kind']} is {o['color']}."),
            dict(instruction=f"How large is the {o['kind']}?", precise=f"{o['size_cm']} cm", kind="open",
                 informative=f"There is {desc}. The {o['kind']} measures {o['size_cm']} cm."),
        ]
    return out


def _options(truth: str, pool: list[str], rng: random.Random, k: int = 4) -> list[str]:
    opts = [truth, *rng.sample([p for p in pool if p != truth], min(k - 1, len(pool) - 1))]
    rng.shuffle(opts)
    return opts


def general_choice_tasks(attrs: dict[str, Any], rng: random.Random) -> list[tuple[str, list[str], str]]:
    """(question, options, correct option) multiple-choice tasks."""
    out = [("What kind of image is this?", _options(attrs["style"], list(STYLES), rng), attrs["style"]),
           ("Which scene is shown?", _options(attrs["scene"], list(SCENES), rng), attrs["scene"]),
           ("How many objects are visible?", _options(str(attrs["count"]), [str(i) for i in range(6)], rng),
            str(attrs["count"]))]
    single = [o for o in attrs["objects"] if sum(p["kind"] == o["kind"] for p in attrs["objects"]) == 1]
    if single:
        o = rng.choice(single)
        out.append((f"Where is the {o['kind']} located?", _options(o["position"], list(POSITIONS), rng),
                    o["position"]))
    return out


def choice_prompt(question: str, options: list[str]) -> str:
    """The multiple-choice user turn in the eval's layout (posttrain/eval/prompts/choice.txt)."""
    letters = "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options))
    return f"{question}\n{letters}\n{CHOICE_SUFFIX}"


def short_prompt(question: str) -> str:
    """The short-answer user turn in the eval's layout (posttrain/eval/prompts/vqa_short.txt)."""
    return f"{question}\n{SHORT_SUFFIX}"


# ---------------------------------------------------------------------------------------- judge data
def judge_triplets(attrs: dict[str, Any], other: dict[str, Any], rng: random.Random,
                   tasks_fn: Callable[[dict[str, Any], random.Random], list[dict[str, str]]] | None = None,
                   ) -> list[dict[str, str]]:
    """Triplets labelled by construction, from one image (and another image for contradictions); `tasks_fn`
    writes the tasks (default `general_tasks`; `domain.domain_tasks` gives domain-like triplets):

    yes:  the task as generated (the informative answer concludes with the precise answer);
    no:   the precise answer of the same question about another image, where this informative answer does
          not state it;
    open: the informative answer of a different question (it settles nothing about this one).
    """
    tasks_fn = tasks_fn or general_tasks
    tasks, others = tasks_fn(attrs, rng), {t["instruction"]: t for t in tasks_fn(other, rng)}
    out = []
    for i, t in enumerate(tasks):
        out.append({**t, "label": "yes"})
        o = others.get(t["instruction"])
        if o is not None and not states_conclusion(t["informative"], o["precise"]):
            out.append({**t, "precise": o["precise"], "label": "no"})
        j = rng.choice([k for k in range(len(tasks)) if k != i])
        if not states_conclusion(tasks[j]["informative"], t["precise"]):
            out.append({**t, "informative": tasks[j]["informative"], "label": "open"})
    return out
