"""Publishing OUT to a local stand-in Hub (tests/hubstub.py): what arrives, what never leaks, how it fails."""

import argparse
import hashlib
import io
import logging
import socket
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipelines.card import write_card
from pipelines.config import RunConfig
from pipelines.hub import HubError, push_dataset
from pipelines.manifest import Manifest
from pipelines.core.rows import count_row_stage, empty_row, rows_to_batch
from pipelines.sinks import DatasetSink
from tests.hubstub import HubStub

SECRET = "hf_stubSecretToken0123456789"


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10 * i, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def out(tmp_path) -> Path:
    """A small finished OUT: two data shards, a rejects shard, manifest and card."""
    out = tmp_path / "out"
    cfg = RunConfig(domain="biomed")
    m = Manifest.open(out, cfg.hash(), cfg.model_dump(mode="json"), resume=True)
    sink = DatasetSink(out, m, domain="biomed", rows_per_shard=2)
    rows = []
    for i in range(4):
        r = empty_row(id=f"r{i}", source_id=f"in.json#{i}", image=_png(i), caption=f"caption {i}",
                      user_prompt="Describe the image.")
        count_row_stage(r, "read")
        count_row_stage(r, "ingest")
        rows.append(r)
    rows.append(dict(rows[0], source_id="in.json#4"))  # a duplicate -> a rejects shard that must stay local
    sink.add_batch(rows_to_batch(rows))
    sink.close()
    write_card(out, m.data)
    return out


@pytest.fixture
def token_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # never pick up a real login
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_push_uploads_shards_and_card_byte_identical_private(out, token_env):
    shards = sorted((out / "data").glob("*.parquet"))
    assert len(shards) >= 2 and list((out / "rejects").glob("*.parquet"))
    with HubStub() as hub:
        url = push_dataset(out, "my-org/biomed-tasks", endpoint=hub.endpoint)
    assert hub.unknown == []
    repo = hub.repos["my-org/biomed-tasks"]
    assert repo.repo_type == "dataset" and repo.visibility == "private"
    assert url.endswith("my-org/biomed-tasks")
    expected = {f"data/{p.name}": p.read_bytes() for p in shards} | {"README.md": (out / "README.md").read_bytes()}
    assert repo.files == expected  # nothing else (no rejects, manifest, model) and byte-identical
    assert len(repo.commits) == 1


def test_public_when_asked_and_existing_repo_is_fine(out, token_env):
    with HubStub() as hub:
        push_dataset(out, "org/ds", private=False, endpoint=hub.endpoint)
        push_dataset(out, "org/ds", private=False, endpoint=hub.endpoint)  # re-publish: 409 on create is ok
    assert hub.repos["org/ds"].visibility == "public"
    assert [r.path for r in hub.requests].count("/api/repos/create") == 2


def test_token_only_in_authorization_header(out, token_env, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # everything, huggingface_hub's own debug logs included
    with HubStub() as hub:
        push_dataset(out, "org/ds", endpoint=hub.endpoint)
    assert hub.requests
    for req in hub.requests:
        assert req.headers.get("authorization") == f"Bearer {SECRET}"
        others = {k: v for k, v in req.headers.items() if k != "authorization"}
        assert SECRET not in repr(others) and SECRET not in req.path
        assert SECRET.encode() not in req.body
    for content in hub.repos["org/ds"].files.values():
        assert SECRET.encode() not in content
    for path in out.rglob("*"):  # card, manifest, shards
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    captured = capfd.readouterr()
    assert SECRET not in caplog.text and SECRET not in captured.out + captured.err
    assert "published" in caplog.text  # the log check is live: our own record is there


def test_unreachable_endpoint_fails_fast_with_one_line_and_leaves_out_intact(out, token_env):
    before = _tree(out)
    t0 = time.monotonic()
    with pytest.raises(HubError) as err:
        push_dataset(out, "org/ds", endpoint=f"http://127.0.0.1:{_closed_port()}")
    assert time.monotonic() - t0 < 10  # no long retry loop on a refused connection
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot reach http://127.0.0.1:")
    assert SECRET not in msg
    assert _tree(out) == before


def test_cli_reports_hub_error_and_exits_1(out, token_env, capsys):
    from pipelines.app import run_all

    cfg = RunConfig(domain="biomed", stages=[], hub={"endpoint": f"http://127.0.0.1:{_closed_port()}"})
    args = argparse.Namespace(push_to_hub="org/ds", no_resume=False, overwrite=False, no_progress=True)
    before = _tree(out)
    assert run_all(cfg, out, args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach") and err.endswith(f"(the local dataset in {out} is intact)")
    assert len(err.splitlines()) == 1
    assert _tree(out) == before


@pytest.mark.parametrize("bad", ["dataset-only", "", "a/b/c", "org/", "/name", "org/na me", "org/../x"])
def test_bad_repo_id_refused_before_any_request(out, token_env, bad):
    with HubStub() as hub:
        with pytest.raises(HubError, match="ORG/NAME"):
            push_dataset(out, bad, endpoint=hub.endpoint)
    assert hub.requests == []


def test_missing_token_or_dataset_refused_before_any_request(out, tmp_path, token_env, monkeypatch):
    with HubStub() as hub:
        with pytest.raises(HubError, match="nothing to publish"):
            push_dataset(tmp_path / "empty", "org/ds", endpoint=hub.endpoint)
        monkeypatch.delenv("HF_TOKEN")
        with pytest.raises(HubError, match="no Hub token"):
            push_dataset(out, "org/ds", endpoint=hub.endpoint)
    assert hub.requests == []


def test_hub_refusal_is_one_line(out, token_env):
    with HubStub() as hub:
        hub.refuse["/api/repos/create"] = (403, {"error": "You don't have the rights to create a dataset under org"})
        with pytest.raises(HubError) as err:
            push_dataset(out, "org/ds", endpoint=hub.endpoint)
    msg = str(err.value)
    assert msg.startswith(f"{hub.endpoint} refused the upload to org/ds") and "\n" not in msg
    assert SECRET not in msg and hub.repos == {}


def test_card_front_matter_parses_with_hub_fields(out):
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["license"] == "other"
    data_files = meta["configs"][0]["data_files"]
    assert {d["split"] for d in data_files} == {"train"}
    for d in data_files:  # every pattern matches an uploaded shard
        assert list(out.glob(d["path"]))
    names = {f["name"] for f in meta["dataset_info"]["features"]}
    assert {"id", "images", "messages"} <= names
