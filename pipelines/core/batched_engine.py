"""Greedy generation with transformers, a whole batch per call (for evaluating many small models on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BatchedVLMEngine:
    """Greedy generation with transformers, a whole batch per call (the `pipelines.core.engines.Engine` protocol).

    `pipelines.core.engines.TransformersEngine` generates one request at a time, which on 2 shared cores makes
    evaluating 16 models take longer than the whole budget; a vLLM engine per model costs ~25 s of start
    each. Left padding keeps every prompt's last token at the end; answers stop at EOS.
    """

    def __init__(self, model_path: str | Path, max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._torch = torch
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32).eval()
        self.max_tokens = max_tokens

    def _encode(self, requests: list) -> dict[str, Any]:
        return self.processor(text=[r.prompt for r in requests], images=[list(r.images) for r in requests],
                              padding=True, return_tensors="pt")

    def count_prompt_tokens(self, request: Any) -> int:
        return int(self._encode([request])["input_ids"].shape[1])

    def generate(self, requests: list) -> list:
        from pipelines.core.engines import GenResult

        if not requests:
            return []
        enc = self._encode(requests)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        with self._torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_tokens, do_sample=False, eos_token_id=eos,
                                      pad_token_id=pad)
        width = enc["input_ids"].shape[1]
        lengths = enc["attention_mask"].sum(1).tolist()
        results = []
        for row, n_prompt in zip(out[:, width:].tolist(), lengths, strict=True):
            hit = eos in row
            new = row[: row.index(eos)] if hit else row
            results.append(GenResult(text=self.tokenizer.decode(new, skip_special_tokens=True),
                                     n_prompt_tokens=int(n_prompt), n_output_tokens=len(new) + hit,
                                     finish_reason="stop" if hit else "length"))
        return results

    def close(self) -> None:
        self.model = None
