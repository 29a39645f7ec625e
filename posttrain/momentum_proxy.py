"""Instruction-free tuning with a momentum proxy (method `momentum_proxy`, arXiv 2603.19482).

The instruction text of every user turn is replaced by N placeholder tokens (the image part stays);
`MomentumProxy` supplies their input embeddings. Phase 1 (`warmup_steps` optimizer steps) trains only the
proxy with the model frozen, and the forward pass uses the live proxy. Phase 2 trains model and proxy,
while the forward pass sees the EMA copy; gradients reach the live proxy through a straight-through
estimator (`ema + proxy - proxy.detach()`), and the EMA is updated after every optimizer step.
Targets can be response-shuffled: segments split on a delimiter are permuted per epoch, seeded.
The proxy is method state (its own nn.Module, stored in checkpoints) and is not part of the saved model.

Placeholder token: the tokenizer's pad token (distinct from eos and the image token; checked), so no
token is added and the saved model keeps its vocabulary. Padding positions (attention 0) never count.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch
from torch import nn

from posttrain.positions import rope_position_ids
from posttrain.sft import SFTRecipe

log = logging.getLogger(__name__)


class MomentumProxy(nn.Module):
    """`num_tokens` learnable instruction embeddings `proxy` [N, D] and their EMA buffer `ema` [N, D]."""

    def __init__(self, num_tokens: int, dim: int, momentum: float = 0.999, init: torch.Tensor | None = None) -> None:
        super().__init__()
        start = init.detach().clone() if init is not None else torch.randn(num_tokens, dim) * 0.02
        self.proxy = nn.Parameter(start.float())
        self.register_buffer("ema", start.float().clone())
        self.momentum = momentum

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- m * ema + (1 - m) * proxy."""
        self.ema.mul_(self.momentum).add_(self.proxy.detach(), alpha=1 - self.momentum)

    def embeddings(self, use_ema: bool) -> torch.Tensor:
        """[N, D]: the live proxy, or the EMA values with gradients passed straight through to the proxy."""
        if not use_ema:
            return self.proxy
        return self.ema + (self.proxy - self.proxy.detach())

    def inject(self, inputs_embeds: torch.Tensor, mask: torch.Tensor, use_ema: bool) -> torch.Tensor:
        """Replace the placeholder positions (`mask` [B, L], N per user turn, in order) of `inputs_embeds`
        [B, L, D] with the proxy embeddings, cycling through the N proxies along each run."""
        out = inputs_embeds.clone()
        if not mask.any():
            return out
        emb = self.embeddings(use_ema).to(out.dtype)
        b, pos = mask.nonzero(as_tuple=True)
        # k-th placeholder of a run gets proxy k: count within each row, modulo N
        order = torch.zeros_like(pos)
        for row in b.unique():
            sel = b == row
            order[sel] = torch.arange(int(sel.sum()), device=pos.device) % emb.shape[0]
        out[b, pos] = emb[order]
        return out


def shuffle_segments(text: str, delimiter: str, seed: int | str) -> str:
    """Permute the `delimiter`-separated segments of `text` with a seeded RNG (pure).
    Segments are stripped; they are re-joined with the delimiter plus a space when the original had one."""
    parts = text.split(delimiter)
    if len(parts) < 2:
        return text
    spaced = any(p.startswith(" ") for p in parts[1:])
    segs = [p.strip() for p in parts]
    random.Random(str(seed)).shuffle(segs)
    return (delimiter + (" " if spaced else "")).join(segs)


class MomentumProxyRecipe(SFTRecipe):
    """The SFT recipe with instructions replaced by the momentum proxy."""

    def setup(self) -> None:
        super().setup()
        tok = self.processor.tokenizer
        pid = tok.pad_token_id
        if pid is None or pid == tok.eos_token_id or pid == getattr(self.module.config, "image_token_id", None):
            raise ValueError("momentum_proxy needs a pad token distinct from eos and the image token")
        self.placeholder_id = pid
        self.in_warmup: bool | None = None

    def _placeholder_text(self) -> str:
        return self.processor.tokenizer.pad_token * self.cfg.momentum_proxy.num_tokens

    def method_modules(self) -> dict[str, nn.Module]:
        if not hasattr(self, "proxy"):
            mp = self.cfg.momentum_proxy
            emb = self.module.get_input_embeddings().weight
            g = torch.Generator().manual_seed(self.cfg.seed)
            # start from the embeddings of random vocabulary entries: the right scale for this model
            init = emb.detach()[torch.randint(0, emb.shape[0], (mp.num_tokens,), generator=g)]
            self.proxy = MomentumProxy(mp.num_tokens, emb.shape[1], mp.momentum, init=init)
        return {"proxy": self.proxy}

    def method_param_groups(self) -> list[dict[str, Any]]:
        lr = self.cfg.momentum_proxy.learning_rate or self.cfg.learning_rate
        return [{"params": [self.method_modules()["proxy"].proxy], "lr": lr, "name": "proxy", "weight_decay": 0.0}]

    def message_transform(self):
        mp, seed = self.cfg.momentum_proxy, self.cfg.seed

        def transform(row: dict[str, Any], messages: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
            out = []
            for m in messages:
                if m["role"] == "user":
                    images = [c for c in m["content"] if c["type"] == "image"]
                    m = {"role": "user", "content": images + [{"type": "text", "text": self._placeholder_text()}]}
                elif m["role"] == "assistant" and mp.shuffle_responses:
                    key = f"{seed}:{epoch}:{row.get('id', '')}"
                    m = {"role": "assistant", "content": [
                        {"type": "text", "text": shuffle_segments(c["text"], mp.delimiter, key)} if c["type"] == "text"
                        else c for c in m["content"]]}
                out.append(m)
            return out

        return transform

    def before_step(self) -> None:
        warm = self.step < self.cfg.momentum_proxy.warmup_steps
        if warm == self.in_warmup:
            return
        self.in_warmup = warm
        names = set(self.trainable_names)
        for n, p in self.module.named_parameters():
            p.requires_grad_(not warm and n in names)
        log.info("momentum proxy: %s", "phase 1 (proxy only)" if warm else "phase 2 (model + proxy, EMA forward)")

    def after_optimizer_step(self) -> None:
        if not self.in_warmup:
            self.proxy.update_ema()

    def inputs_embeds(self, batch: dict[str, Any]) -> torch.Tensor:
        ids = batch["input_ids"].to(self.device)
        mask = (ids == self.placeholder_id) & (batch["attention_mask"].to(self.device) == 1)
        embeds = self.module.get_input_embeddings()(ids)
        return self.proxy.inject(embeds, mask, use_ema=not self.in_warmup)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        inputs = self.model_inputs(batch)
        inputs["inputs_embeds"] = self.inputs_embeds(batch)
        position_ids = rope_position_ids(self.module, inputs)  # M-RoPE (Qwen2-VL) derives them from input_ids
        if position_ids is not None:
            inputs["position_ids"] = position_ids
        inputs.pop("input_ids")
        return self.model(**inputs).loss

    def save_final(self) -> None:
        super().save_final()
        if self.rank == 0:
            torch.save(self.proxy.state_dict(), self.out_dir / "momentum_proxy.pt")  # for inspection only
