"""Procedural sample sets: format, reproducibility, captions that match the ground truth, pixels that match it."""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import sample_data as sd

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("samples")
    return {d: sd.generate(d, root / d, n=64, seed=0) for d in ("biomed", "food")}


def _meta(json_path: Path) -> list[dict]:
    return [json.loads(line) for line in (json_path.parent / "metadata.jsonl").read_text().splitlines()]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("domain", ["biomed", "food"])
def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, domain):
    a = _tree(sd.generate(domain, tmp_path / "a", n=6, seed=3).parent)
    b = _tree(sd.generate(domain, tmp_path / "b", n=6, seed=3).parent)
    c = _tree(sd.generate(domain, tmp_path / "c", n=6, seed=4).parent)
    assert len(a) == 6 + 2 and a == b
    assert a["image_caption_pairs.json"] != c["image_caption_pairs.json"]
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in pngs) >= 5  # nearly every image changes with the seed


def test_smaller_n_is_a_prefix(tmp_path):
    small = json.loads(sd.generate("food", tmp_path / "s", n=3, seed=1).read_text())
    big = json.loads(sd.generate("food", tmp_path / "b", n=5, seed=1).read_text())
    assert big[:3] == small


@pytest.mark.parametrize("domain", ["biomed", "food"])
def test_format(sets, domain):
    path = sets[domain]
    pairs = json.loads(path.read_text())
    meta = _meta(path)
    assert len(pairs) == len(meta) == 64
    for rec, m in zip(pairs, meta):
        assert set(rec) == {"images", "messages"} and len(rec["images"]) == 1
        img_path = path.parent / rec["images"][0]
        assert img_path.is_file() and rec["images"][0].startswith("images/")
        with Image.open(img_path) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (128, 128)
        user, assistant = rec["messages"]
        assert user["role"] == "user" and user["content"].startswith("<image>")
        assert assistant["role"] == "assistant" and assistant["content"].strip()
        assert m["image"] == rec["images"][0] and m["domain"] == domain and m["caption"] == assistant["content"]
    assert len({m["caption"] for m in meta}) > 50  # captions are not a handful of repeats


def test_biomed_captions_state_every_attribute(sets):
    meta = _meta(sets["biomed"])
    for m in meta:
        a, cap = m["attributes"], m["caption"].lower()
        assert a["modality"].lower() in cap and a["region"] in cap, cap
        assert a["count"] == len(a["findings"])
        if a["count"] == 0:
            assert "no abnormal findings" in cap
        else:
            assert "no abnormal" not in cap
            assert re.search(rf"\b{WORDS[a['count']]} findings?\b", cap), cap
        for f in a["findings"]:
            assert re.search(rf"\b{f['size_mm']} mm\b", cap), cap
            assert f["kind"] in cap and f"{f['density']}-density" in cap and f["position"] in cap, cap
    # the set covers the space: every modality, normals and abnormals, several phrasings
    assert {m["attributes"]["modality"] for m in meta} == set(sd.MODALITY_REGIONS)
    assert {m["attributes"]["count"] for m in meta} >= {0, 1, 2}
    assert len({m["caption"].split()[0] for m in meta}) >= 4


def test_biomed_findings_sit_at_their_named_positions_and_apart(sets):
    for m in _meta(sets["biomed"]):
        a = m["attributes"]
        for f in a["findings"]:
            x, y = f["center"]
            pos = f["position"]
            assert (x < 0.45) if "left" in pos else (x > 0.55) if "right" in pos else abs(x - 0.5) < 0.1
            assert (y < 0.45) if "upper" in pos else (y > 0.55) if "lower" in pos else abs(y - 0.5) < 0.1
        assert len({f["position"] for f in a["findings"]}) == a["count"]
        radius_px = {id(f): f["size_mm"] / sd.REGION_FOV_MM[a["region"]] * 128 / 2 for f in a["findings"]}
        for f, g in itertools.combinations(a["findings"], 2):  # separately countable at 128 px
            dist = np.hypot(f["center"][0] - g["center"][0], f["center"][1] - g["center"][1]) * 128
            assert dist - radius_px[id(f)] - radius_px[id(g)] > 2, a


def _render(attrs: dict, seed: int = 7) -> np.ndarray:
    fn = sd.draw_biomed if "modality" in attrs else sd.draw_food
    return np.asarray(fn(attrs, 128, np.random.default_rng(seed)), dtype=np.int16)


def test_a_finding_changes_pixels_only_at_its_position(sets):
    checked = 0
    for m in _meta(sets["biomed"]):
        a = m["attributes"]
        fov = sd.REGION_FOV_MM[a["region"]]
        for f in a["findings"]:
            with_f = _render({**a, "findings": [f], "count": 1})
            without = _render({**a, "findings": [], "count": 0})
            diff = np.abs(with_f - without).max(axis=2)
            cx, cy = f["center"][0] * 128, f["center"][1] * 128
            half = f["size_mm"] / fov * 128 / 2 + 2.5
            yy, xx = np.mgrid[:128, :128]
            near = (np.abs(xx - cx) <= half + 3) & (np.abs(yy - cy) <= half + 3)
            assert diff[near].max() > 40, (a, f)  # visible where the caption says
            assert diff[~near].max() == 0, (a, f)  # and nowhere else
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("density, sign", [("high", 1), ("low", -1)])
def test_density_sets_brightness(density, sign):
    f = {"kind": "nodule", "size_mm": 30, "position": "center", "density": density, "center": [0.5, 0.45]}
    base = {"modality": "CT", "region": "abdomen", "count": 0, "findings": []}
    delta = _render({**base, "count": 1, "findings": [f]})[58, 64].mean() - _render(base)[58, 64].mean()
    assert sign * delta > 60


def test_food_captions_state_every_attribute(sets):
    meta = _meta(sets["food"])
    for m in meta:
        a, cap = m["attributes"], m["caption"].lower()
        assert a["dish"] in cap and f"{a['container_color']} {a['container']}" in cap, cap
        assert a["count"] == sum(i["count"] for i in a["ingredients"])
        assert all(i["count"] >= 1 for i in a["ingredients"])
        assert re.search(rf"\b{WORDS[a['count']]} (pieces|items)\b", cap), cap
        for i in a["ingredients"]:
            stem = i["name"].split()[0].rstrip("y")  # "strawberr" matches strawberry and strawberries
            assert re.search(rf"\b{WORDS[i['count']]} {i['color']} {stem}", cap), (i, cap)
    assert {m["attributes"]["dish"] for m in meta} == set(sd.DISHES)


def _components(mask: np.ndarray, min_px: int = 4) -> int:
    """4-connected blobs of at least min_px pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        size, todo = 0, deque([(y0, x0)])
        while todo:
            y, x = todo.popleft()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        n += size >= min_px
    return n


def test_food_images_show_the_stated_number_of_pieces_per_colour(sets):
    for m in _meta(sets["food"]):
        img = np.asarray(Image.open(sets["food"].parent / m["image"]).convert("RGB"))
        per_colour: dict[str, int] = {}
        for i in m["attributes"]["ingredients"]:
            per_colour[i["color"]] = per_colour.get(i["color"], 0) + i["count"]
        for colour, expected in per_colour.items():
            blobs = _components((img == sd.COLORS[colour]).all(axis=2))
            assert blobs == expected, (m["caption"], colour, blobs)


def test_food_colour_attribute_changes_the_image():
    rng = np.random.default_rng(5)
    a = sd.sample_food(rng)
    b = copy.deepcopy(a)
    old = a["ingredients"][0]["color"]
    new = next(c for c in sd.COLORS if c != old and c not in {i["color"] for i in a["ingredients"]})
    b["ingredients"][0]["color"] = new
    img_a, img_b = _render(a), _render(b)
    was_old = (img_a == sd.COLORS[old]).all(axis=2)
    now_new = (img_b == sd.COLORS[new]).all(axis=2)
    assert not (img_a == sd.COLORS[new]).all(axis=2).any() and now_new.sum() > 10
    assert (now_new & ~was_old).sum() == 0  # recoloured exactly where the old pieces were


def test_unknown_domain_and_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="biomed, food"):
        sd.generate("astronomy", tmp_path)
    with pytest.raises(ValueError):
        sd.generate("food", tmp_path, n=0)
    with pytest.raises(KeyError):  # the CLI refuses it before generate
        sd.make_item("astronomy", 0)


def test_ensure_sample_caches_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_ADAPT_CACHE", str(tmp_path))
    path = sd.ensure_sample("biomed", n=4, seed=2)
    assert path.parent == tmp_path / "sample" / f"biomed-n4-s2-v{sd.VERSION}"
    mtime = path.stat().st_mtime_ns
    assert sd.ensure_sample("biomed", n=4, seed=2) == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    assert [p.name for p in (tmp_path / "sample").iterdir()] == [path.parent.name]  # no temp folder left
    assert _tree(path.parent) == _tree(sd.generate("biomed", tmp_path / "fresh", n=4, seed=2).parent)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "pipelines.sample_data", "--domain", "food", "--out", str(out), "--n", "3"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert len(json.loads((out / "image_caption_pairs.json").read_text())) == 3
    bad = subprocess.run([*cmd[:3], "--domain", "astronomy", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
