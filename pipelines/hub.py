"""Publish OUT (Parquet shards + dataset card) to the Hugging Face Hub.

The token comes only from the environment (HF_TOKEN) or the user's `huggingface-cli login`; it is
never passed around, written to disk, logged, or put in the card or the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class HubError(RuntimeError):
    """Publishing failed; the message is one line, the local dataset is untouched."""


def push_dataset(out: Path, repo_id: str, *, private: bool = True, endpoint: str | None = None) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if "/" not in repo_id:
        raise HubError(f"--push-to-hub wants ORG/NAME, got {repo_id!r}")
    if not (out / "data").is_dir() or not (out / "README.md").exists():
        raise HubError(f"nothing to publish in {out}: run the dataset stages first")
    api = HfApi(endpoint=endpoint)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(out),
            allow_patterns=["data/*.parquet", "README.md"],
            commit_message="vlm-adapt: publish dataset",
        )
    except HfHubHTTPError as e:
        raise HubError(f"Hub refused the upload to {repo_id}: {str(e).splitlines()[0]}") from None
    except OSError as e:  # connection errors (requests/httpx subclass OSError)
        raise HubError(f"cannot reach the Hub at {endpoint or 'huggingface.co'}: {type(e).__name__}") from None
    except Exception as e:
        if "connect" in type(e).__name__.lower() or "timeout" in type(e).__name__.lower():
            raise HubError(f"cannot reach the Hub at {endpoint or 'huggingface.co'}: {type(e).__name__}") from None
        raise
    log.info("published %s", url)
    return str(url)
