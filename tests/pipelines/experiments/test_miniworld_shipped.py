"""The miniworld models that ship with the project (for `make demo`) match their recipe, or the test fails.

A shipped build is used only while its stamp's fingerprint equals the recipe's fingerprint (sizes, budgets, data
sample, library versions, parent model). An edit that changes what a model is trained on makes this test fail
until `python -m pipelines.experiments.miniworld.models ship synthesizer judge` rebuilds and re-ships them.
"""

from __future__ import annotations

import json

import pytest

from pipelines.experiments.miniworld import models

SHIPPED = ("synthesizer", "judge")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_build_matches_its_recipe(name):
    stamp = models.shipped_stamp(name)
    assert stamp is not None, f"{models.shipped_dir(name)} is missing: run `... models ship {name}`"
    assert stamp["fingerprint"] == models.fingerprint(name), (
        f"the shipped {name} was built by another recipe: run `python -m pipelines.experiments.miniworld.models "
        f"ship {name}`")
    files = {p.name for p in models.shipped_dir(name).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    size = sum(p.stat().st_size for p in models.shipped_dir(name).iterdir())
    assert size < 12 * 2**20  # small enough to ship


@pytest.mark.parametrize("name", SHIPPED)
def test_a_fresh_cache_takes_the_shipped_build_without_training(name, tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_ADAPT_CACHE", str(tmp_path))

    def no_training(*_):
        raise AssertionError("trained although a matching build ships")

    monkeypatch.setitem(models._BUILDERS, name, no_training)
    monkeypatch.setitem(models._BUILDERS, "generalist", no_training)
    path = models.ensure(name)
    assert path.parent == tmp_path / "miniworld"
    assert json.loads((path / "miniworld_build.json").read_text())["fingerprint"] == models.fingerprint(name)
    assert (path / "model.safetensors").read_bytes() == (models.shipped_dir(name) / "model.safetensors").read_bytes()


def test_a_stale_shipped_build_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_ADAPT_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "fingerprint", lambda name: "another-recipe")
    assert not models._install_shipped("judge", tmp_path / "miniworld" / "judge-x")
    assert not (tmp_path / "miniworld").exists()
