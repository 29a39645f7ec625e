"""Position ids for forwards that feed `inputs_embeds` instead of `input_ids` (momentum proxy, VITask).

Most VLMs number positions 0..L-1 along the sequence whatever the inputs are. Qwen2-VL and Qwen2.5-VL use
multimodal RoPE (M-RoPE, arXiv 2409.12191 Sec. 2.1): 3-D (temporal, height, width) ids that the model derives
from `input_ids`, `mm_token_type_ids` and `image_grid_thw` inside its own forward. Given only `inputs_embeds` it
cannot, and transformers then falls back to 1-D positions (or to stale deltas of an earlier call): silently
wrong. `rope_position_ids` computes the ids with the model's own `get_rope_index` so the caller can pass them.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside DDP/FSDP (`.module`) and peft (`get_base_model()`) wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def uses_mrope(model: nn.Module) -> bool:
    """True for models whose positions come from `get_rope_index` (Qwen2-VL family)."""
    return callable(getattr(getattr(unwrap(model), "model", None), "get_rope_index", None))


def rope_position_ids(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor | None:
    """(3, B, L) M-RoPE ids for `inputs` (`input_ids`, `attention_mask`, vision tensors) of an M-RoPE model;
    None for 1-D models, whose own default positions are right for `inputs_embeds` too."""
    if not uses_mrope(model):
        return None
    fn = unwrap(model).model.get_rope_index
    params = inspect.signature(fn).parameters
    kwargs = {k: inputs.get(k) for k in ("image_grid_thw", "video_grid_thw", "attention_mask", "mm_token_type_ids")
              if k in params}
    if "mm_token_type_ids" in params and kwargs["mm_token_type_ids"] is None:
        raise ValueError(f"{type(unwrap(model)).__name__}: M-RoPE positions need the processor's mm_token_type_ids")
    with torch.no_grad():
        position_ids, _ = fn(inputs["input_ids"], **kwargs)
    return position_ids
