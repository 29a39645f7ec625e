"""Session fixtures: tiny models are built once (cached on disk), Ray starts once."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Explicit from the first Ray import on, as the CLI sets it (pipelines/run.py). Left unset, ray.init switches a
# process to token auth part-way (Ray 2.59+); the likely cause of a token-auth GCS its own process could not talk to
# ("Failed to start GCS ... InvalidAuthToken", seen once with 3 test workers).
os.environ.setdefault("RAY_AUTH_MODE", "token")

# Timing is not what the property tests check: on a shared 2-core machine input generation can be slow.
settings.register_profile("shared-cpu", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-cpu")


def pytest_configure(config):
    """Create Ray's per-user auth token (~/.ray/auth_token) once, before `make test`'s worker processes start
    local clusters side by side: each would otherwise generate and write it when it finds none. Only then: the
    import costs every pytest start about a second."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return  # an xdist worker (the controller has done it), or one process, where Ray creates it unraced
    try:
        from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    except ImportError:  # another Ray version: it creates the token itself at ray.init
        return
    ensure_token_if_auth_enabled()


@pytest.fixture(scope="session")
def tiny_vlm_path() -> str:
    from pipelines.refs import resolve_model

    return resolve_model("tiny://vlm")


@pytest.fixture(scope="session")
def tiny_judge_path() -> str:
    from pipelines.refs import resolve_model

    return resolve_model("tiny://judge")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray


def pytest_collection_modifyitems(config, items):
    """Files with slow or engine-starting tests first. With `make test`'s worker processes (xdist, one file per
    worker at a time) the longest files then start first and the short ones fill in around them, instead of a long
    file starting last and running alone. Stable sort: the order inside a file is kept."""
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("vllm")}
    items.sort(key=lambda item: item.path not in heavy)
