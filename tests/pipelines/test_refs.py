"""Model references are resolved once at the edge: stages and recipes see plain paths, the run hash does not."""

from __future__ import annotations

from pipelines.config import load_config
from pipelines.refs import resolve_model, resolve_run


def test_resolve_passes_non_tiny_refs_through(tmp_path):
    for ref in ("HuggingFaceTB/SmolVLM-256M-Instruct", str(tmp_path), "./models/x"):
        assert resolve_model(ref) == ref
    assert not any(tmp_path.iterdir())  # nothing was built for a pass-through


def test_miniworld_refs_resolve_to_the_built_model(monkeypatch, tmp_path):
    from pipelines.experiments.miniworld import models

    monkeypatch.setattr(models, "ensure", lambda name: tmp_path / f"built-{name}")
    assert resolve_model("miniworld://judge") == str(tmp_path / "built-judge")


def test_resolve_run_gives_paths_and_keeps_the_hash(tmp_path, monkeypatch):
    from pipelines.fixtures import tiny

    monkeypatch.setattr(tiny, "build_tiny", lambda name: tmp_path / f"tiny-{name}")
    cfg = load_config("biomed", "tiny", ["stages=[ingest, synth, judge, mix, train]"])
    resolved = resolve_run(cfg)
    assert (resolved.synth.model, resolved.judge.model, resolved.train.model) == (
        str(tmp_path / "tiny-vlm"), str(tmp_path / "tiny-judge"), str(tmp_path / "tiny-vlm"))
    assert cfg.synth.model == "tiny://vlm"  # the original is untouched
    assert resolved.hash() == cfg.hash()  # where the cache lives is not part of a run's identity
    assert resolved.reference("synth.model") == "tiny://vlm"
    other = load_config("biomed", "tiny", ["synth.max_tokens=7"])
    assert resolve_run(other).hash() != resolved.hash()  # a real change still shows


def test_resolve_run_builds_only_what_the_stages_need(tmp_path, monkeypatch):
    from pipelines.fixtures import tiny

    built = []
    monkeypatch.setattr(tiny, "build_tiny", lambda name: built.append(name) or tmp_path / name)
    resolve_run(load_config("biomed", "tiny", ["stages=[ingest, mix]"]))
    assert built == []
    resolve_run(load_config("biomed", "tiny", ["stages=[ingest, judge]"]))
    assert built == ["judge"]
