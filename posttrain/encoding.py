"""Training data: Parquet rows -> token ids, assistant-only labels, vision tensors, length-grouped batches.

Rows follow the dataset contract (`id`, `images`, `messages`, `task_kind`, `split`). An example is encoded
with the model's own processor and chat template. Label spans are found by *rendering prefixes*: the
token count of `messages[:i]` rendered with a generation prompt is where assistant turn `i` starts, and
the count of `messages[:i+1]` is where it ends. Prefixes are tokenized with the plain tokenizer (cheap)
and shifted by the number of tokens the processor adds when it expands image placeholders, which is a
constant per example because images sit only in the first user turn. No token id is hard-coded.

Examples that cannot be used are never dropped silently: `encode_example` raises `SkipExample` with a
reason (`image_truncation`, `too_long`, `no_labels`, `unreadable_image`), and `SFTDataset` records every
skipped id with its reason in `skipped`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
TEXT_KEYS = ("input_ids", "labels", "attention_mask")
# Vision tensors whose dim 1 runs along the token sequence (padded/truncated with the text).
SEQUENCE_ALIGNED_KEYS = ("cross_attention_mask", "mm_token_type_ids")


class SkipExample(Exception):
    """An example that cannot be trained on; `reason` is a short snake_case word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- rows ----------------------------------------------------------------------------------------


def row_images(row: dict[str, Any]) -> list[Image.Image]:
    """Decoded RGB images of a row (HF Image features decode to PIL, raw structs hold PNG bytes)."""
    out = []
    for im in row.get("images") or []:
        if isinstance(im, dict):
            data = im.get("bytes")
            if data is None and im.get("path"):
                with open(im["path"], "rb") as f:
                    data = f.read()
            try:
                im = Image.open(io.BytesIO(data))
                im.load()
            except Exception as e:  # noqa: BLE001 - any decoder failure marks the example
                raise SkipExample("unreadable_image", str(e)) from None
        out.append(im.convert("RGB"))
    return out


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow gives content items as {type, text} structs with text=None for images; chat templates
    expect {"type": "image"} without a text key."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        items = []
        for c in content:
            if c["type"] == "image":
                items.append({"type": "image"})
            else:
                items.append({"type": "text", "text": c.get("text") or ""})
        out.append({"role": m["role"], "content": items})
    return out


# -- encoding ------------------------------------------------------------------------------------


@dataclass
class EncodeOptions:
    max_length: int = 4096
    truncate_final_turn: bool = False  # cut a long final assistant turn (text only) instead of skipping
    train_after_turn: int | None = None  # label every token after message k (synthesizer tuning), not just assistants
    append_eos: bool = False  # append the tokenizer's EOS after the last turn, labelled (synthesizer tuning)


def _render(processor: Any, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _count(tok: Any, text: str, full_ids: list[int]) -> int:
    """Tokens of `text` as a prefix of the full sequence (longest common prefix if merges differ)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = 0
    for a, b in zip(ids, full_ids, strict=False):
        if a != b:
            break
        n += 1
    return n


def label_spans(processor: Any, messages: list[dict[str, Any]], train_after_turn: int | None = None,
                append_eos: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the trained token spans, in plain-tokenizer coordinates (before image expansion).

    `append_eos` adds the tokenizer's EOS after the rendered conversation as one more trained token, as the
    AdaMLLM synthesizer recipe does (bigai-ai/QA-Synthesizer llava/train/train.py `preprocess_llama3`), so a
    tuned synthesizer learns to stop after its last turn.
    """
    tok = _tokenizer(processor)
    full = _render(processor, messages, generation_prompt=False)
    if append_eos:
        if not tok.eos_token or tok.eos_token_id is None:
            raise ValueError("append_eos needs a tokenizer with an EOS token")
        full += tok.eos_token
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    if append_eos and full_ids[-1:] != [tok.eos_token_id]:
        raise ValueError(f"EOS {tok.eos_token!r} does not tokenize to its id {tok.eos_token_id} at the end")
    spans = []
    if train_after_turn is not None:
        start = _count(tok, _render(processor, messages[: train_after_turn + 1], generation_prompt=False), full_ids)
        spans.append((start, len(full_ids)))
    else:
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = _count(tok, _render(processor, messages[:i], generation_prompt=True), full_ids)
            end = _count(tok, _render(processor, messages[: i + 1], generation_prompt=False), full_ids)
            if end > start:
                spans.append((start, end))
    if append_eos and not any(s <= len(full_ids) - 1 < e for s, e in spans):
        spans.append((len(full_ids) - 1, len(full_ids)))
    return full, spans


def encode_example(processor: Any, messages: list[dict[str, Any]], images: list[Image.Image],
                   opts: EncodeOptions) -> dict[str, torch.Tensor]:
    """One example -> {input_ids, labels, attention_mask: [L]} + the processor's vision tensors (batch dim kept)."""
    full, spans = label_spans(processor, messages, opts.train_after_turn, opts.append_eos)
    tok = _tokenizer(processor)
    n_plain = len(tok(full, add_special_tokens=False)["input_ids"])
    kwargs: dict[str, Any] = {"text": [full], "return_tensors": "pt", "add_special_tokens": False}
    if images:
        kwargs["images"] = [images]
    enc = processor(**kwargs)
    ids = enc["input_ids"][0]
    shift = len(ids) - n_plain  # tokens added by image expansion, all before the first assistant turn
    labels = torch.full_like(ids, IGNORE_INDEX)
    for s, e in spans:
        labels[s + shift : e + shift] = ids[s + shift : e + shift]
    if not (labels != IGNORE_INDEX).any():
        raise SkipExample("no_labels", "no assistant tokens")
    out = {"input_ids": ids, "labels": labels, "attention_mask": enc["attention_mask"][0]}
    for k, v in enc.items():
        if k not in out and isinstance(v, torch.Tensor):
            out[k] = v
    if len(ids) > opts.max_length:
        out = _truncate(out, spans[-1][0] + shift, processor, opts)
    return out


def _image_token_ids(processor: Any) -> set[int]:
    tok = _tokenizer(processor)
    ids = set()
    for name in ("image_token", "fake_image_token", "global_image_token", "boi_token", "eoi_token"):
        t = getattr(processor, name, None) or getattr(tok, name, None)
        if isinstance(t, str):
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i != tok.unk_token_id:
                ids.add(i)
    for attr in ("image_token_id", "image_token_index"):
        i = getattr(processor, attr, None)
        if isinstance(i, int):
            ids.add(i)
    return ids


def _truncate(ex: dict[str, torch.Tensor], last_turn_start: int, processor: Any, opts: EncodeOptions
              ) -> dict[str, torch.Tensor]:
    ids = ex["input_ids"]
    img_pos = torch.isin(ids, torch.tensor(sorted(_image_token_ids(processor)) or [-1])).nonzero()
    if len(img_pos) and int(img_pos[-1]) >= opts.max_length:
        # Cutting inside image tokens would desynchronise tokens and image features.
        raise SkipExample("image_truncation", f"{len(ids)} tokens, image ends at {int(img_pos[-1]) + 1}")
    if not opts.truncate_final_turn or last_turn_start >= opts.max_length - 1:
        raise SkipExample("too_long", f"{len(ids)} tokens > max_length {opts.max_length}")
    out = dict(ex)
    for k in TEXT_KEYS:
        out[k] = ex[k][: opts.max_length]
    for k in SEQUENCE_ALIGNED_KEYS:
        if k in out:
            out[k] = out[k][:, : opts.max_length]
    return out
