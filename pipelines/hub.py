"""Publish OUT (Parquet shards + dataset card) to the Hugging Face Hub.

The token comes only from the environment (HF_TOKEN) or the user's `hf auth login`; it is never
passed around, written to disk, logged, or put in the card or the manifest. Only `data/*.parquet`
and `README.md` are uploaded: rejects, the manifest (full config, local paths) and the model stay local.

Nothing here can hang: huggingface_hub's shared HTTP client is built with `timeout=None`, so for the
push its client factory is wrapped to give every request a connect/read/write/pool timeout
(`hub.timeout_s`); a Hub that accepts the connection and never answers fails with one line. Calls that
huggingface_hub retries (preupload, LFS transfers, commit) take at most 6 tries with 23 s of back-off in
all. Shards go through `upload_folder`, so the Hub decides per file (preupload) whether it is a regular
git blob or a large file, and large ones take its large-file path (Xet when `hf_xet` is installed, whose
own connect/read timeouts apply, else LFS over the same timed client).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

UPLOAD_PATTERNS = ["data/*.parquet", "README.md"]
# The Hub's own rule for names (huggingface_hub.utils.validate_repo_id), plus the ORG/ part we require.
_REPO_ID = re.compile(r"^[\w.\-]{1,96}/[\w.\-]{1,96}$")


class HubError(RuntimeError):
    """Publishing failed; the message is one line, the local dataset is untouched."""


def check_repo_id(repo_id: str) -> str:
    """Return repo_id if it is ORG/NAME, else raise HubError (before any network call)."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise HubError(f"--push-to-hub wants ORG/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}")
    return repo_id


def _is_transport_error(e: BaseException) -> bool:
    # huggingface_hub speaks through an httpx-style client whose connection/timeout errors are not
    # OSError; match them by class name so a client change does not turn them into tracebacks.
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, OSError) or bool(names & {"TransportError", "RequestError", "ConnectionError", "Timeout"})


@contextlib.contextmanager
def request_timeout(seconds: float) -> Iterator[None]:
    """Every request huggingface_hub makes inside the block times out after `seconds` (connect, read,
    write and pool wait each); the client factory in place before is restored after."""
    from huggingface_hub import close_session, set_client_factory
    from huggingface_hub.utils import _http

    # The factory in use (a user's proxy/certificate set-up included), wrapped rather than replaced.
    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

    def timed_client():
        client = previous()
        client.timeout = seconds  # httpx-style client: one bound for connect, read, write and pool
        return client

    set_client_factory(timed_client)  # also closes the shared client, so the next call builds a timed one
    try:
        yield
    finally:
        set_client_factory(previous)
        close_session()


def _is_timeout(e: BaseException) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, TimeoutError) or bool(names & {"TimeoutException", "Timeout"})


def push_dataset(
    out: Path, repo_id: str, *, private: bool = True, endpoint: str | None = None, timeout_s: float = 60.0
) -> str:
    """Create the dataset repo (private by default, existing is fine) and upload shards + card in one commit.

    Every HTTP request times out after `timeout_s`. Returns the repo URL. Raises HubError with a
    one-line message on any expected failure.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    out = Path(out)
    shards = sorted((out / "data").glob("*.parquet"))
    if not shards or not (out / "README.md").exists():
        raise HubError(f"nothing to publish in {out}: run the dataset stages first")
    if not get_token():
        raise HubError("no Hub token: set HF_TOKEN or run `hf auth login`")
    where = endpoint or "the Hub"
    api = HfApi(endpoint=endpoint)
    try:
        with request_timeout(timeout_s):
            url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=str(out),
                allow_patterns=UPLOAD_PATTERNS,
                commit_message="vlm-adapt: publish dataset",
            )
    except HfHubHTTPError as e:
        raise HubError(f"{where} refused the upload to {repo_id}: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # e.g. the Hub rejected the card's YAML metadata
        raise HubError(f"{where} refused the upload to {repo_id}: {str(e).splitlines()[0]}") from None
    except Exception as e:
        if _is_timeout(e):
            raise HubError(f"cannot reach {where}: no answer within hub.timeout_s={timeout_s:g} s "
                           f"({type(e).__name__})") from None
        if _is_transport_error(e):
            raise HubError(f"cannot reach {where}: {type(e).__name__}") from None
        raise
    log.info("published %d shard(s) and the card to %s", len(shards), url)
    return str(url)
