"""Fixtures shared by the posttrain tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread per test module: the shared 2-core machine thrashes with more; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def processor(tiny_vlm_path):
    """The tiny VLM's processor."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm_path)


@pytest.fixture(scope="module")
def tsm():
    """The tiny task-specific model (image classifier) for VITask."""
    from pipelines.refs import resolve_model
    from posttrain.tsm import TaskSpecificModel

    return TaskSpecificModel.load(resolve_model("tiny://tsm"))
