"""Session fixtures: tiny models are built once (cached on disk), Ray starts once."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# Timing is not what the property tests check: on a shared 2-core machine input generation can be slow.
settings.register_profile("shared-cpu", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-cpu")


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
