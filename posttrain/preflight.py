"""Checks of the target model before any training step: each failure is one line naming the model and what is
missing, instead of a stack trace from deep inside the first forward (or a run whose examples are all skipped).

`checked_processor(path, ref, max_length)` verifies, in order: the architecture is an image-text-to-text model
transformers knows; the processor has a chat template; the template emits the processor's image token for an
image part; a one-image prompt fits `max_length` without cutting image tokens. It returns the loaded processor.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

PROBE_SIZE = (64, 64)  # probe image: the token count of a small image is a lower bound for real ones


class ModelInputError(ValueError):
    """The target model cannot be trained as configured; the message is one line naming it."""


def _architecture(path: str, ref: str) -> Any:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:  # transformers' own messages run over many lines
        raise ModelInputError(f"model {ref}: unknown architecture or unreadable config.json "
                              f"({str(e).splitlines()[0][:160]})") from None
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        archs = ",".join(getattr(config, "architectures", None) or []) or "none listed"
        raise ModelInputError(f"model {ref}: architecture {archs} (model_type {config.model_type!r}) is not an "
                              "image-text-to-text model transformers can load")
    return config


def image_token(processor: Any) -> str | None:
    """The placeholder text the processor expands into image tokens."""
    tok = getattr(processor, "tokenizer", None)
    value = getattr(processor, "image_token", None) or getattr(tok, "image_token", None)
    return value if isinstance(value, str) else None


def checked_processor(path: str, ref: str, max_length: int) -> Any:
    """The processor of the model at `path` (`ref` as the user wrote it), after the checks above."""
    from pipelines.core.processors import load_processor

    _architecture(path, ref)
    processor = load_processor(path)
    if not getattr(processor, "chat_template", None):
        raise ModelInputError(f"model {ref}: no chat template (processor and tokenizer have none); "
                              "add chat_template.jinja to the model folder")
    token = image_token(processor)
    if token is None:
        raise ModelInputError(f"model {ref}: the processor names no image token")
    probe = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    if token not in text:
        raise ModelInputError(f"model {ref}: the chat template does not emit the processor's image token {token!r} "
                              "for an image part")
    enc = processor(text=[text], images=[[Image.new("RGB", PROBE_SIZE)]], return_tensors="pt",
                    add_special_tokens=False)
    n = int(enc["input_ids"].shape[1])
    if n >= max_length:
        raise ModelInputError(f"model {ref}: max_length {max_length} would cut image tokens: a one-image prompt of a "
                              f"{PROBE_SIZE[0]}x{PROBE_SIZE[1]} image already takes {n} tokens")
    return processor
