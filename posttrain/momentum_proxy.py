"""Instruction-free tuning with a momentum proxy (method `momentum_proxy`, arXiv 2603.19482), following the
reference code `myeongkyunkang/InstFree` (`recipes/full_finetune_single_device.py`, lines marked UPDATED).

The instruction text of every user turn is replaced by N placeholder tokens (the image part stays);
`MomentumProxy` supplies their input embeddings, as the reference's `proxy_instruction` does.
- Phase 1, warm-up (`warmup_epochs`, or `warmup_steps` when set): its own pass over the data with its own
  AdamW and schedule that hold only the proxy; the model is frozen and the forward uses the live proxy
  (the reference's separate `proxy_instruction_warmup` run, whose optimizer gets only the proxy).
- Then the EMA starts from the warmed-up proxy (reference: `proxy_instruction_momentum = weight` after
  loading the warm-up checkpoint).
- Phase 2 (the `train` epochs): before each optimizer step's forward the live proxy is reset to the EMA,
  the optimizer steps model and live proxy, and the EMA takes m*ema + (1-m)*live. So the proxy moves by
  (1-m) times an unconstrained step and the model weights absorb the update. (The reference resets before
  every micro-batch; within one accumulation step the live proxy does not change, so that is the same.)
Targets can be response-shuffled the reference way (split on the delimiter, strip, shuffle, rejoin with
delimiter + space), seeded per (seed, epoch, id) here instead of the reference's unseeded `random.shuffle`,
so runs and resumes repeat. The proxy is method state (checkpointed, with `warmed_up`), dropped at
inference: the saved model has no proxy and is prompted with plain instructions.

Placeholder token: the tokenizer's pad token (distinct from eos and the image token; checked), so no
token is added and the saved model keeps its vocabulary (the reference uses the rare token '①').
Padding positions (attention 0) never count.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from typing import Any

import torch
from torch import nn

from posttrain.optim import build_scheduler
from posttrain.positions import rope_position_ids
from posttrain.sft import SFTRecipe

log = logging.getLogger(__name__)

# The reference maps a one-hot 768-d input through nn.Linear(768, D*N): its proxy is one weight column,
# initialised U(-1/sqrt(768), 1/sqrt(768)) (PyTorch's Linear default).
REFERENCE_FAN_IN = 768


class MomentumProxy(nn.Module):
    """`num_tokens` learnable instruction embeddings `proxy` [N, D] (the live proxy the optimizer steps),
    their momentum copy `ema` [N, D], and `warmed_up` (phase 1 done; checkpointed with the rest)."""

    def __init__(self, num_tokens: int, dim: int, momentum: float = 0.999, init: torch.Tensor | None = None) -> None:
        super().__init__()
        start = init.detach().clone() if init is not None else torch.randn(num_tokens, dim) * 0.02
        self.proxy = nn.Parameter(start.float())
        self.register_buffer("ema", start.float().clone())
        self.register_buffer("warmed_up", torch.tensor(False))
        self.momentum = momentum

    @torch.no_grad()
    def start_momentum(self) -> None:
        """End of warm-up: the EMA starts from the warmed-up proxy."""
        self.ema.copy_(self.proxy)
        self.warmed_up.fill_(True)

    @torch.no_grad()
    def reset_to_ema(self) -> None:
        """live proxy <- ema (before the forward pass of a phase-2 step)."""
        self.proxy.copy_(self.ema)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- m * ema + (1 - m) * proxy (after a phase-2 optimizer step)."""
        self.ema.mul_(self.momentum).add_(self.proxy.detach(), alpha=1 - self.momentum)

    def inject(self, inputs_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Replace the placeholder positions (`mask` [B, L], N per user turn, in order) of `inputs_embeds`
        [B, L, D] with the live proxy, cycling through the N proxies along each run."""
        out = inputs_embeds.clone()
        if not mask.any():
            return out
        emb = self.proxy.to(out.dtype)
        b, pos = mask.nonzero(as_tuple=True)
        # k-th placeholder of a run gets proxy k: count within each row, modulo N
        order = torch.zeros_like(pos)
        for row in b.unique():
            sel = b == row
            order[sel] = torch.arange(int(sel.sum()), device=pos.device) % emb.shape[0]
        out[b, pos] = emb[order]
        return out


def shuffle_segments(text: str, delimiter: str, seed: int | str) -> str:
    """The reference's response shuffling (InstFree `torchtune/datasets/multimodal/_the_cauldron.py`,
    `response_shuffling == 'comma'`): split the stripped text on `delimiter`, strip each segment, shuffle,
    join with delimiter + ' '. Pure: the permutation comes from `random.Random(str(seed))`."""
    segs = [s.strip() for s in text.strip().split(delimiter)]
    random.Random(str(seed)).shuffle(segs)
    return (delimiter + " ").join(segs)


def _all_reduce_mean(grad: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.all_reduce(grad)
    grad.div_(dist.get_world_size())


class MomentumProxyRecipe(SFTRecipe):
    """The SFT recipe with instructions replaced by the momentum proxy (warm-up, then momentum phase)."""

    def setup(self) -> None:
        super().setup()
        tok = self.processor.tokenizer
        pid = tok.pad_token_id
        if pid is None or pid == tok.eos_token_id or pid == getattr(self.module.config, "image_token_id", None):
            raise ValueError("momentum_proxy needs a pad token distinct from eos and the image token")
        self.placeholder_id = pid
        self.in_warmup = False
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # The proxy lives outside the DDP module, so its gradient is averaged here, once per backward.
            self.proxy.proxy.register_post_accumulate_grad_hook(lambda p: _all_reduce_mean(p.grad))

    def _placeholder_text(self) -> str:
        return self.processor.tokenizer.pad_token * self.cfg.momentum_proxy.num_tokens

    def method_modules(self) -> dict[str, nn.Module]:
        if not hasattr(self, "proxy"):
            mp = self.cfg.momentum_proxy
            emb = self.module.get_input_embeddings().weight
            g = torch.Generator().manual_seed(self.cfg.seed)
            if mp.init == "reference_linear":
                bound = 1 / math.sqrt(REFERENCE_FAN_IN)
                init = (torch.rand(mp.num_tokens, emb.shape[1], generator=g) * 2 - 1) * bound
            else:  # embeddings of random vocabulary entries: the right scale for this model
                init = emb.detach()[torch.randint(0, emb.shape[0], (mp.num_tokens,), generator=g)]
            self.proxy = MomentumProxy(mp.num_tokens, emb.shape[1], mp.momentum, init=init)
        return {"proxy": self.proxy}

    def proxy_lr(self) -> float:
        return self.cfg.momentum_proxy.learning_rate or self.cfg.learning_rate

    def method_param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.method_modules()["proxy"].proxy], "lr": self.proxy_lr(), "name": "proxy",
                 "weight_decay": 0.0}]

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

    # -- phase 1: warm-up ----------------------------------------------------------------------

    def warmup_steps(self) -> int:
        """Optimizer steps of phase 1: `warmup_steps` when set, else `warmup_epochs` over the data."""
        mp = self.cfg.momentum_proxy
        if mp.warmup_steps is not None:
            return mp.warmup_steps
        return math.ceil(mp.warmup_epochs * self.micro_per_epoch / self.cfg.grad_accum)

    def warm_up(self) -> int:
        """Phase 1: train only the live proxy (own AdamW + schedule, model frozen), then start the EMA from it.
        Returns the optimizer steps taken; per-step losses go to `warmup_metrics.jsonl`."""
        cfg, n = self.cfg, self.warmup_steps()
        if n > 0 and self.micro_per_epoch == 0:
            raise ValueError("momentum_proxy: no batches to warm up on")
        opt = torch.optim.AdamW([{"params": [self.proxy.proxy], "lr": self.proxy_lr(), "name": "proxy",
                                  "weight_decay": 0.0}], lr=self.proxy_lr())
        sched = build_scheduler(opt, cfg, max(1, n))
        # Same batch order as the main epochs (the reference's warm-up run uses the same seeded sampler).
        sampler = copy.deepcopy(self.sampler)
        sampler.load_state_dict({"epoch": 0, "position": 0})
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.train()
        self.in_warmup = True
        log_path = self.out_dir / "warmup_metrics.jsonl"
        if self.rank == 0:
            log_path.write_text("")
        step, epoch, acc = 0, 0, []
        try:
            while step < n:
                sampler.set_epoch(epoch)
                self.dataset.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collator,
                                                     num_workers=cfg.dataloader_workers,
                                                     generator=torch.Generator().manual_seed(cfg.seed))
                for batch in loader:
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                        loss = self.compute_loss(batch)
                    (loss / cfg.grad_accum).backward()
                    acc.append(float(loss.detach()))
                    if len(acc) < cfg.grad_accum:
                        continue
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    if self.rank == 0:
                        with open(log_path, "a") as f:
                            rec = {"warmup_step": step, "epoch": epoch, "loss": sum(acc) / len(acc)}
                            f.write(json.dumps(rec) + "\n")
                    acc = []
                    if step >= n:
                        break
                epoch += 1
        finally:
            self.in_warmup = False
            names = set(self.trainable_names)
            for name, p in self.module.named_parameters():
                p.requires_grad_(name in names)
        self.proxy.start_momentum()
        log.info("momentum proxy: warm-up done (%d steps); EMA starts from the warmed-up proxy", step)
        return step

    def train(self) -> dict[str, Any]:
        if not bool(self.proxy.warmed_up):  # a resumed phase-2 run restored warmed_up=True from its checkpoint
            self.warm_up()
        return super().train()

    # -- phase 2 hooks -------------------------------------------------------------------------

    def before_step(self) -> None:
        self.proxy.reset_to_ema()

    def after_optimizer_step(self) -> None:
        self.proxy.update_ema()

    def inputs_embeds(self, batch: dict[str, Any]) -> torch.Tensor:
        ids = batch["input_ids"].to(self.device)
        mask = (ids == self.placeholder_id) & (batch["attention_mask"].to(self.device) == 1)
        embeds = self.module.get_input_embeddings()(ids)
        return self.proxy.inject(embeds, mask)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        inputs = self.model_inputs(batch)
        inputs["inputs_embeds"] = self.inputs_embeds(batch)
        position_ids = rope_position_ids(self.module, inputs)  # M-RoPE (Qwen2-VL) derives them from input_ids
        if position_ids is not None:
            inputs["position_ids"] = position_ids
        inputs.pop("input_ids")
        # warm-up bypasses the DDP wrapper: no model parameter takes a gradient there
        model = self.module if self.in_warmup else self.model
        return model(**inputs).loss

    def save_final(self) -> None:
        super().save_final()
        if self.rank == 0:
            torch.save(self.proxy.state_dict(), self.out_dir / "momentum_proxy.pt")  # for inspection only
