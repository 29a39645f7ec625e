"""Publish OUT (Parquet shards + dataset card) to the Hugging Face Hub.

The token comes only from the environment (HF_TOKEN) or the user's `hf auth login`; it is never
passed around, written to disk, logged, or put in the card or the manifest. Only `data/*.parquet`
and `README.md` are uploaded: rejects, the manifest (full config, local paths) and the model stay local.
"""

from __future__ import annotations

import logging
import re
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


def push_dataset(out: Path, repo_id: str, *, private: bool = True, endpoint: str | None = None) -> str:
    """Create the dataset repo (private by default, existing is fine) and upload shards + card in one commit.

    Returns the repo URL. Raises HubError with a one-line message on any expected failure.
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
        if _is_transport_error(e):
            raise HubError(f"cannot reach {where}: {type(e).__name__}") from None
        raise
    log.info("published %d shard(s) and the card to %s", len(shards), url)
    return str(url)
