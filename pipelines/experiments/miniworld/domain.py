"""The domain side of the miniature world: tasks written from each scan's ground truth (the `oracle`: what a
perfect synthesizer and judge would produce) and the grounding check of synthesized tasks against it.

Domain tasks mirror `worlds.general_tasks` one for one (style -> modality, scene -> body region, object ->
finding, colour -> density, cm -> mm), with a precise answer and an informative answer whose last sentence
states it, so they are what the synthesizer was tuned to write, in domain words. They are a parallel copy of
`general_tasks` rather than one function over two vocabularies on purpose: the general texts are hashed into the
trained models' fingerprints, and a shared rewrite would retrain every miniworld model.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pipelines.fixtures.sample_data.biomed import BIOMED_KINDS, MODALITY_REGIONS
from pipelines.fixtures.sample_data.common import article, join, number_word

MODALITIES = tuple(MODALITY_REGIONS)
REGIONS = tuple(dict.fromkeys(r for rs in MODALITY_REGIONS.values() for r in rs))
KINDS = tuple(BIOMED_KINDS)
DENSITIES = ("high", "low")
# words that make an instruction ask about the domain (an attribute's name or a value of one)
DOMAIN_WORDS = ("modality", "scan", "body", "region", "finding", "abnormal", "density", "dense",
                *MODALITIES, *REGIONS, *KINDS)


def _phrase(f: dict[str, Any]) -> str:
    core = f"{f['size_mm']} mm {f['density']}-density {f['kind']}"
    return f"{article(core)} {core} in the {f['position']}"


def domain_tasks(attrs: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """Instruction tasks answered by a scan's attributes: `{instruction, precise, informative, kind}`."""
    mod, reg, fs, n = attrs["modality"], attrs["region"], attrs["findings"], attrs["count"]
    seen = join([_phrase(f) for f in fs]) if fs else "no findings"
    counted = f"{number_word(n)} finding{'s' if n != 1 else ''}"
    kinds = sorted({f["kind"] for f in fs})
    a_mod = f"{article(mod)} {mod}"
    out = [
        dict(instruction="What imaging modality is this?", precise=mod, kind="open",
             informative=f"The image is {a_mod} of the {reg} with {counted}. It is {a_mod}."),
        dict(instruction="Which body region is shown in this image?", precise=reg, kind="open",
             informative=f"The {mod} shows the {reg} with {counted}. The region is the {reg}."),
        dict(instruction="What findings are seen in the image?", precise=", ".join(kinds) if kinds else "none",
             kind="open", informative=f"The {mod} shows {seen}. The findings are {', '.join(kinds) or 'none'}."),
        dict(instruction="Are there any findings in this image?", precise="Yes" if n else "No", kind="closed",
             informative=f"The {mod} of the {reg} shows {seen}. "
                         + (f"So yes, there are {counted}." if n else "So no, there are no findings.")),
        dict(instruction="How many findings are there?", precise=str(n), kind="open",
             informative=f"The image shows {seen}. There are {n} findings."),
    ]
    kind = rng.choice(kinds) if kinds and rng.random() < 0.5 else rng.choice(KINDS)
    there = kind in kinds
    out.append(dict(instruction=f"Is there {article(kind)} {kind} in this image?", precise="Yes" if there else "No",
                    kind="closed", informative=f"The image shows {seen}. "
                    + (f"So yes, there is {article(kind)} {kind}." if there else f"So no, there is no {kind}.")))
    other = mod if rng.random() < 0.5 else rng.choice(MODALITIES)
    out.append(dict(instruction=f"Is this {article(other)} {other}?", precise="Yes" if other == mod else "No",
                    kind="closed", informative=f"The image is {a_mod} of the {reg}. "
                    + ("So yes." if other == mod else f"So no, it is not {article(other)} {other}.")))
    single = [f for f in fs if sum(g["kind"] == f["kind"] for g in fs) == 1]
    if single:
        f = rng.choice(single)
        desc, k = _phrase(f), f["kind"]
        out += [
            dict(instruction=f"Where is the {k} located?", precise=f["position"], kind="open",
                 informative=f"There is {desc}. The {k} is in the {f['position']}."),
            dict(instruction=f"What is the density of the {k}?", precise=f["density"], kind="open",
                 informative=f"There is {desc}. The {k} is of {f['density']} density."),
            dict(instruction=f"How large is the {k}?", precise=f"{f['size_mm']} mm", kind="open",
                 informative=f"There is {desc}. The {k} measures {f['size_mm']} mm."),
        ]
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 -]+", "", text.lower()).strip()


def facts(attrs: dict[str, Any]) -> set[str]:
    """Every open answer the attributes make true (normalised)."""
    fs = attrs["findings"]
    kinds = sorted({f["kind"] for f in fs})
    out = {attrs["modality"], attrs["region"], str(attrs["count"]), number_word(attrs["count"]),
           ", ".join(kinds) if kinds else "none"}
    for f in fs:
        out |= {f["kind"], f["position"], f["density"], f"{f['size_mm']} mm", f"{f['density']}-density"}
    return {_norm(x) for x in out}


def closed_truth(instruction: str, attrs: dict[str, Any]) -> bool | None:
    """The true yes/no answer of a closed domain question the attributes settle, else None."""
    q = instruction.lower()
    kinds = {f["kind"] for f in attrs["findings"]}
    if re.search(r"\bany (abnormal )?findings?\b|\bany abnormalit", q):
        return attrs["count"] > 0
    for k in KINDS:
        if re.search(rf"\bis there an? {k}\b", q):
            return k in kinds
    for m in MODALITIES:
        if re.search(rf"\bis this an? {re.escape(m.lower())}\b", q):
            return m == attrs["modality"]
    return None


def grounded(task: dict[str, Any], attrs: dict[str, Any]) -> bool:
    """Whether a task's precise answer is a fact of the scan: an open answer among `facts`, or a yes/no
    answer to a closed domain question that the attributes settle and make true."""
    precise = _norm(task.get("precise") or "")
    if precise in ("yes", "no"):
        truth = closed_truth(task.get("instruction") or "", attrs)
        return truth is not None and truth == (precise == "yes")
    return bool(precise) and precise in facts(attrs)


def asks_domain(task: dict[str, Any]) -> bool:
    """Whether the instruction names a domain attribute or one of its values."""
    q = (task.get("instruction") or "").lower()
    return any(re.search(rf"\b{re.escape(w.lower())}", q) for w in DOMAIN_WORDS)


def grounding(tasks_by_image: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, Any]:
    """Shares of synthesized tasks that are grounded and that ask about the domain, over (attrs, tasks) pairs."""
    tasks = [(a, t) for a, ts in tasks_by_image for t in ts]
    n = len(tasks)
    return {"images": len(tasks_by_image), "tasks": n,
            "images_with_tasks": sum(bool(ts) for _, ts in tasks_by_image),
            "grounded": sum(grounded(t, a) for a, t in tasks) / n if n else 0.0,
            "asks_domain": sum(asks_domain(t) for _, t in tasks) / n if n else 0.0}
