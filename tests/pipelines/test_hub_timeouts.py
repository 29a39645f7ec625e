"""Publishing cannot hang, and large shards take the Hub's large-file path (against tests/hubstub.py).

References: huggingface_hub's shared client is built with `timeout=None`
(huggingface_hub/utils/_http.py `default_client_factory`), and its `http_backoff` retries a timed-out
request `max_retries=5` times, sleeping 1, 2, 4, 8, 8 s (base 1 s, doubling, capped at 8 s); the
Git LFS batch API (github.com/git-lfs/git-lfs docs/api/batch.md) is batch -> PUT -> verify.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import pytest

from pipelines.config import RunConfig
from pipelines.hub import HubError, push_dataset
from tests.hubstub import HubStub
from tests.pipelines.test_hub import _tree, out, token_env  # noqa: F401 - fixtures

TIMEOUT = 0.5
# huggingface_hub's back-off for a retried call: 5 retries, sleeping base 1 s doubled each time, capped at 8 s.
BACKOFF_SLEEPS = [min(8, 2**i) for i in range(5)]  # [1, 2, 4, 8, 8]


def test_a_hub_that_never_answers_fails_with_one_line_within_the_timeout(out, token_env):  # noqa: F811
    before = _tree(out)
    with HubStub() as hub:
        hub.stall.add("/")  # accept every connection and request, answer nothing
        t0 = time.monotonic()
        with pytest.raises(HubError) as err:
            push_dataset(out, "org/ds", endpoint=hub.endpoint, timeout_s=TIMEOUT)
        took = time.monotonic() - t0
    # create_repo is one request that huggingface_hub does not retry: one timeout, plus slack.
    assert took < TIMEOUT + 3, took
    assert len(hub.requests) == 1 and hub.requests[0].path == "/api/repos/create"
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == f"cannot reach {hub.endpoint}: no answer within hub.timeout_s=0.5 s (ReadTimeout)"
    assert _tree(out) == before


def test_a_hub_that_stalls_on_a_retried_call_fails_within_the_retry_bound(out, token_env, monkeypatch):  # noqa: F811
    from huggingface_hub.utils import _http

    slept: list[float] = []
    # Record huggingface_hub's back-off sleeps instead of waiting them out (23 s); the request timeouts are real.
    monkeypatch.setattr(_http.time, "sleep", slept.append)
    with HubStub() as hub:
        hub.stall.add("/api/datasets/org/ds/preupload/")  # repo creation works, the preupload check hangs
        t0 = time.monotonic()
        with pytest.raises(HubError, match=r"^cannot reach .*no answer within hub.timeout_s=0.5 s"):
            push_dataset(out, "org/ds", endpoint=hub.endpoint, timeout_s=TIMEOUT)
        took = time.monotonic() - t0
    tries = [r for r in hub.requests if "/preupload/" in r.path]
    assert len(tries) == 1 + len(BACKOFF_SLEEPS)  # bounded: the first try and 5 retries, then the error
    assert slept == BACKOFF_SLEEPS
    assert took < len(tries) * TIMEOUT + 5, took


def test_cli_on_a_stalled_hub_exits_1_with_one_line(out, token_env, capsys):  # noqa: F811
    from pipelines.app import run_all

    with HubStub() as hub:
        hub.stall.add("/")
        cfg = RunConfig(domain="biomed", stages=[], hub={"endpoint": hub.endpoint, "timeout_s": TIMEOUT})
        args = argparse.Namespace(push_to_hub="org/ds", no_resume=False, overwrite=False, no_progress=True)
        t0 = time.monotonic()
        assert run_all(cfg, out, args) == 1
        assert time.monotonic() - t0 < TIMEOUT + 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: cannot reach {hub.endpoint}: no answer within hub.timeout_s=0.5 s")


def test_timeout_is_scoped_to_the_push(out, token_env):  # noqa: F811
    from huggingface_hub import get_session

    with HubStub() as hub:
        push_dataset(out, "org/ds", endpoint=hub.endpoint, timeout_s=7)
    # The previous client factory is back: huggingface_hub's own default (no timeout) for other callers.
    assert get_session().timeout.read is None


def test_large_shards_take_the_lfs_path_byte_identical(out, token_env, monkeypatch):  # noqa: F811
    import huggingface_hub.constants

    # The Hub answers "lfs" for large files; with hf_xet installed huggingface_hub would send them to a
    # Xet CAS server, which the stub does not serve, so this test takes the Git LFS path instead.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    shards = sorted((out / "data").glob("*.parquet"))
    card = (out / "README.md").read_bytes()
    with HubStub() as hub:
        hub.lfs_min_size = min(p.stat().st_size for p in shards)  # every shard is "large", the card is not
        assert len(card) < hub.lfs_min_size
        push_dataset(out, "org/ds", endpoint=hub.endpoint, timeout_s=5)
    assert hub.unknown == []
    oids = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in shards}
    assert set(hub.lfs_objects) == set(oids)  # each shard was PUT once to the LFS store, by its sha256
    puts = [r for r in hub.requests if r.method == "PUT"]
    assert sorted(r.path.rsplit("/", 1)[1] for r in puts) == sorted(oids)
    commit = next(r for r in hub.requests if "/commit/" in r.path)
    assert commit.body.count(b'"lfsFile"') == len(shards) and commit.body.count(b'"key": "file"') == 1
    repo = hub.repos["org/ds"]
    assert repo.files == {f"data/{p.name}": p.read_bytes() for p in shards} | {"README.md": card}
