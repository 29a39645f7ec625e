"""Single-stage SFT recipe (torchtune style): `SFTRecipe(cfg, data_files, out_dir)` -> setup / train / cleanup.

Layout of `out_dir` after a run: the final model + processor at the top level (loads with
`from_pretrained(out_dir)`; LoRA runs are merged, the adapter alone is in `out_dir/adapter`),
`metrics.jsonl` (one line per optimizer step), `skipped.jsonl` (examples not trained on, with reason),
and `checkpoints/step-NNNNNNN/` + `checkpoints/latest` (trainable weights, optimizer, scheduler,
sampler position, RNG, method state). A run finding `checkpoints/latest` resumes from it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posttrain.config import TrainConfig
from posttrain.collate import Collator
from posttrain.dataset import LengthGroupedBatchSampler, SFTDataset, load_rows
from posttrain.encoding import EncodeOptions
from posttrain.optim import TRAINED_SPLITS, atomic_write, build_scheduler, module_group, param_groups

log = logging.getLogger(__name__)

class SFTRecipe:
    """Supervised fine-tuning on assistant tokens. Subclasses override the hooks below
    (`encode_options`, `message_transform`, `image_transform`, `method_modules`, `compute_loss`,
    `before_step`, `after_optimizer_step`) instead of patching the model.

    `wrap_model(model) -> model` is given by Ray Train workers (DDP/FSDP); `rank`/`world_size` shard the
    batches. `stop_after_steps` ends `train()` early without a final save (a test hook that plays a kill).
    """

    def __init__(self, cfg: TrainConfig, data_files: Sequence[str], out_dir: str | Path, *, rank: int = 0,
                 world_size: int = 1, wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                 device: torch.device | None = None, stop_after_steps: int | None = None) -> None:
        self.cfg = cfg
        self.data_files = list(data_files)
        self.out_dir = Path(out_dir)
        self.rank, self.world_size = rank, world_size
        self.wrap_model = wrap_model
        self.stop_after_steps = stop_after_steps
        self.device = device or torch.device(
            "cuda" if (cfg.use_gpu if cfg.use_gpu is not None else torch.cuda.is_available()) else "cpu"
        )
        self.step = 0
        self.micro_in_epoch = 0  # micro-batches of the current epoch already trained on
        self.seen_ids: list[str] = []
        self.last_loss: float | None = None

    # -- hooks ---------------------------------------------------------------------------------

    def encode_options(self) -> EncodeOptions:
        return EncodeOptions(max_length=self.cfg.max_length, truncate_final_turn=self.cfg.truncate_final_turn)

    def message_transform(self):  # (row, messages, epoch) -> messages, or None
        return None

    def image_transform(self):  # (row, images) -> images, or None
        return None

    def method_modules(self) -> dict[str, torch.nn.Module]:
        """Method state (nn.Modules) trained beside the model and stored in checkpoints, not in the model."""
        return {}

    def method_param_groups(self) -> list[dict[str, Any]]:
        return []

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(**self.model_inputs(batch)).loss

    def before_step(self) -> None:
        """Called before each optimizer step's first micro-batch (phase switches)."""

    def after_optimizer_step(self) -> None:
        """Called after each optimizer step (EMA updates)."""

    # -- setup ---------------------------------------------------------------------------------

    def load_module(self) -> torch.nn.Module:
        """`cfg.model` in fp32 on CPU, with LoRA adapters when enabled (nothing frozen yet)."""
        from transformers import AutoModelForImageTextToText

        cfg = self.cfg
        module = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=torch.float32)
        if cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            module = get_peft_model(module, LoraConfig(
                r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
            ))
        return module

    def setup(self) -> None:
        from posttrain.preflight import checked_processor

        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._seed_all(cfg.seed)
        self.processor = checked_processor(cfg.model, cfg.model, cfg.max_length)
        module = self.load_module()
        self.autocast = cfg.precision == "bf16" or (
            cfg.precision == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        frozen = {"vision": cfg.freeze_vision, "projector": cfg.freeze_projector, "language": cfg.freeze_language}
        for name, p in module.named_parameters():
            trainable = not frozen[module_group(name)] and (not cfg.lora.enabled or "lora_" in name)
            p.requires_grad_(trainable)
        if cfg.gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.lora.enabled:
                module.enable_input_require_grads()
        self.module = module.to(self.device)
        self.trainable_names = [n for n, p in module.named_parameters() if p.requires_grad]
        for m in self.method_modules().values():
            m.to(self.device)
        self.model = self.wrap_model(self.module) if self.wrap_model else self.module

        rows = load_rows(self.data_files)
        self.dataset = SFTDataset(rows, self.processor, self.encode_options(),
                                  transform=self.message_transform(), image_transform=self.image_transform())
        self.sampler = LengthGroupedBatchSampler(
            self.dataset.lengths, cfg.batch_size, seed=cfg.seed, group_by_length=cfg.group_by_length,
            blocks=self._split_blocks(rows), rank=self.rank, world_size=self.world_size,
        )
        tok = getattr(self.processor, "tokenizer", self.processor)
        self.collator = Collator(pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.micro_per_epoch = len(self.sampler)
        self.total_steps = max(1, math.ceil(self.micro_per_epoch * cfg.epochs / cfg.grad_accum))

        groups = param_groups(self.module, cfg, self.trainable_names) + self.method_param_groups()
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self._maybe_resume()
        if self.rank == 0:
            with open(self.out_dir / "skipped.jsonl", "w") as f:
                for s in self.dataset.skipped:
                    f.write(json.dumps(s) + "\n")
        log.info("training %d examples (%d skipped), %d steps, %d trainable tensors on %s", len(self.dataset),
                 len(self.dataset.skipped), self.total_steps, len(self.trainable_names), self.device)

    def _split_blocks(self, rows: Any) -> list[list[int]] | None:
        """Two-stage exports train stage1 before stage2; rows of other splits are not trained on."""
        if "split" not in rows.column_names:
            return None
        splits = rows["split"]
        by_split: dict[str, list[int]] = {}
        for pos, i in enumerate(self.dataset.index):
            by_split.setdefault(splits[i], []).append(pos)
        other = sorted(set(by_split) - set(TRAINED_SPLITS))
        if other:
            log.warning("rows of splits %s are not trained on", other)
        return [by_split[s] for s in TRAINED_SPLITS if s in by_split]

    # -- training ------------------------------------------------------------------------------

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k != "ids"}

    def _loader(self):
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collator,
                                           num_workers=self.cfg.dataloader_workers,
                                           # own generator: creating an iterator must not draw from the global
                                           # RNG, or a resumed run's dropout stream would shift
                                           generator=torch.Generator().manual_seed(self.cfg.seed))

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        self.model.train()
        steps_this_run, done = 0, self.step >= self.total_steps
        t0 = time.perf_counter()
        tokens = slots = 0
        acc_loss, acc_n = 0.0, 0
        epoch = self.sampler.epoch
        while not done:
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            for batch in self._loader():
                if acc_n == 0:
                    self.before_step()
                self.micro_in_epoch += 1
                self.seen_ids += batch["ids"]
                real, total = int(batch["attention_mask"].sum()), batch["attention_mask"].numel()
                tokens, slots = tokens + real, slots + total
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    loss = self.compute_loss(batch)
                (loss / cfg.grad_accum).backward()
                acc_loss, acc_n = acc_loss + float(loss.detach()), acc_n + 1
                if acc_n < cfg.grad_accum:
                    continue
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.after_optimizer_step()
                self.step += 1
                steps_this_run += 1
                self._log({"step": self.step, "epoch": epoch, "loss": acc_loss / acc_n,
                           "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups},
                           "tokens": tokens, "pad_fraction": 1 - tokens / max(slots, 1),
                           "elapsed_s": round(time.perf_counter() - t0, 4)})
                acc_loss, acc_n = 0.0, 0
                if self.step % cfg.save_every_steps == 0 or self.step >= self.total_steps:
                    self.save_checkpoint()
                if self.step >= self.total_steps:
                    done = True
                    break
                if self.stop_after_steps is not None and steps_this_run >= self.stop_after_steps:
                    return {"stopped_early": True, "step": self.step}
            else:
                epoch += 1
                self.micro_in_epoch = 0
        elapsed = time.perf_counter() - t0
        self.save_final()
        return {"step": self.step, "total_steps": self.total_steps, "examples": len(self.dataset),
                "skipped": self.dataset.skip_counts(), "tokens": tokens,
                "pad_fraction": 1 - tokens / max(slots, 1), "tokens_per_s": tokens / max(elapsed, 1e-9),
                "final_loss": self.last_loss, "elapsed_s": elapsed}

    def _log(self, rec: dict[str, Any]) -> None:
        self.last_loss = rec["loss"]
        if self.rank == 0:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        log.info("step %d loss %.4f", rec["step"], rec["loss"])

    # -- checkpoints ---------------------------------------------------------------------------

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        names = set(self.trainable_names)
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if n in names}

    def checkpoint_tensors(self) -> dict[str, Any]:
        """{file name: object} of model weights and optimizer state for a checkpoint folder. Called on every
        rank (a sharded strategy gathers collectively here); only rank 0's answer is written."""
        if self.rank != 0:
            return {}
        return {"model.pt": self._trainable_state(), "optimizer.pt": self.optimizer.state_dict()}

    def restore_tensors(self, d: Path) -> None:
        """Load what `checkpoint_tensors` wrote into checkpoint folder `d`."""
        params = dict(self.module.named_parameters())
        with torch.no_grad():
            for n, t in torch.load(d / "model.pt", map_location="cpu", weights_only=True).items():
                params[n].copy_(t)
        self.optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True))

    def save_checkpoint(self) -> None:
        state = {
            "step": self.step, "epoch": self.sampler.epoch, "micro_in_epoch": self.micro_in_epoch,
            "rng": {"python": random.getstate(), "numpy": (lambda s: (s[0], s[1].tolist(), *s[2:]))(np.random.get_state()), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }
        tensors = self.checkpoint_tensors()
        if self.rank != 0:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_dir / f"step-{self.step:07d}"
        tmp = self.ckpt_dir / f".tmp-step-{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for fname, obj in tensors.items():
            torch.save(obj, tmp / fname)
        torch.save({k: m.state_dict() for k, m in self.method_modules().items()}, tmp / "method.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(state, tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write(self.ckpt_dir / "latest", final.name)
        for old in sorted(self.ckpt_dir.glob("step-*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _maybe_resume(self) -> None:
        latest = self.ckpt_dir / "latest"
        if not latest.exists():
            if self.rank == 0 and (self.out_dir / "metrics.jsonl").exists():
                (self.out_dir / "metrics.jsonl").unlink()
            return
        d = self.ckpt_dir / latest.read_text().strip()
        self.restore_tensors(d)
        mods = self.method_modules()
        for k, sd in torch.load(d / "method.pt", map_location="cpu", weights_only=True).items():
            mods[k].load_state_dict(sd)
        self.scheduler.load_state_dict(torch.load(d / "scheduler.pt", map_location="cpu", weights_only=True))
        state = torch.load(d / "state.pt", map_location="cpu", weights_only=True)
        self.step, self.micro_in_epoch = state["step"], state["micro_in_epoch"]
        self.sampler.load_state_dict({"epoch": state["epoch"], "position": state["micro_in_epoch"]})
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.rank == 0 and (self.out_dir / "metrics.jsonl").exists():
            # Steps after the checkpoint were lost with the killed run; they are trained again.
            lines = (self.out_dir / "metrics.jsonl").read_text().splitlines()
            keep = [ln for ln in lines if json.loads(ln)["step"] <= self.step]
            atomic_write(self.out_dir / "metrics.jsonl", "".join(ln + "\n" for ln in keep))
        log.info("resumed from %s (step %d)", d, self.step)

    def save_final(self) -> None:
        if self.rank != 0:
            return
        module = self.module
        if self.cfg.lora.enabled:
            module.save_pretrained(self.out_dir / "adapter")
            module = module.merge_and_unload()
        module.save_pretrained(self.out_dir)
        self.processor.save_pretrained(self.out_dir)

    @staticmethod
    def _seed_all(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def cleanup(self) -> None:
        self.model = self.module = self.optimizer = self.scheduler = None  # type: ignore[assignment]
