"""VITask training (arXiv 2410.06456): `train(cfg, data_dir, out_dir)`, the entry `posttrain.train.train` calls
for `method: vitask`, and the two-stage loop `train_vitask`.

Stage 1 trains the exemplar connector and the VLM with van*L_van + ep*L_EP + a*L_RDA; stage 2 freezes the
connector (no grad, so AdamW leaves it bit-identical) and adds b*L_CRT. One AdamW and one warmup+decay
schedule (`cfg.lr_scheduler`, `cfg.warmup_ratio`) span both stages; stage lengths come from
`cfg.vitask.stage1_epochs` / `stage2_epochs` (`cfg.epochs` is not used), and stage 2 starts a fresh epoch.
The TSM stays frozen throughout. Paper recipe by default: the VLM's vision encoder frozen and LoRA adapters on
the language model only (`train.freeze_vision` / `train.lora.enabled` unset mean frozen / LoRA here; the projector
still trains in full unless `freeze_projector`, as in LLaVA-1.5's LoRA recipe). Set them to false for the variants.

Layout of `out_dir`: the final VLM + processor at the top level (no TSM, no connector: inference uses the
plain model), `vitask_connector.safetensors` (the connector, for analysis or further training),
`metrics.jsonl` (one line per optimizer step with every loss component, the CRT counts and the learning
rates), `skipped.jsonl` (rows/turns not trained on, with reason) and `train_summary.json`.

Not supported here (they fail loudly): Ray Train workers (`num_workers > 1`), checkpoint/resume.
LoRA runs also write the adapter alone to `out_dir/adapter`; the top-level model is merged.

Modules: `vitask_data` (examples, negatives, batches), `vitask_objective` (connector, exemplar injection,
losses), `vitask_eval` (generation without TSM, incomplete-instruction variants).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posttrain.config import TrainConfig, VITaskSettings
from posttrain.dataset import LengthGroupedBatchSampler, load_rows
from posttrain.encoding import EncodeOptions
from posttrain.optim import TRAINED_SPLITS, build_scheduler, data_files_in, module_group, param_groups
from posttrain.vitask_data import VITaskBatch, VITaskCollator, VITaskDataset, pad_token_id
from posttrain.vitask_objective import CONNECTOR_FILE, VITaskObjective, load_tsm, save_connector, unsupported_reason

log = logging.getLogger(__name__)

COUNT_KEYS = ("crt_used", "crt_without_negative", "crt_without_tokens")  # summed over micro-batches, not averaged


@dataclass
class VITaskResult:
    history: list[dict[str, Any]]  # one record per optimizer step (what metrics.jsonl holds)
    steps: dict[int, int]  # optimizer steps per stage
    n_examples: int
    n_without_negative: int  # examples that never get a CRT term (no same-instruction, other-answer sample)


def stage_steps(settings: VITaskSettings, steps_per_epoch: int) -> dict[int, int]:
    """Optimizer steps of stage 1 and 2 from their (fractional) epochs."""
    return {1: math.ceil(settings.stage1_epochs * steps_per_epoch), 2: math.ceil(settings.stage2_epochs * steps_per_epoch)}


def freeze_groups(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """Turn off grad for the module groups `cfg.freeze_*` names; return the names still trainable."""
    # VITask keeps the vision encoder frozen unless told otherwise (the paper's recipe)
    vision = True if cfg.freeze_vision is None else cfg.freeze_vision
    frozen = {"vision": vision, "projector": cfg.freeze_projector, "language": cfg.freeze_language}
    for name, p in model.named_parameters():
        if frozen[module_group(name)]:
            p.requires_grad_(False)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _batches(dataset: VITaskDataset, sampler: LengthGroupedBatchSampler, collate: VITaskCollator, workers: int,
             seed: int, epoch: int) -> Iterator[tuple[VITaskBatch, int]]:
    """(batch, epoch) forever, one length-grouped epoch after the other from `epoch` (negatives drawn per epoch)."""
    while True:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        sampler.position = 0
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                             generator=torch.Generator().manual_seed(seed))
        for batch in loader:
            yield batch, epoch
        epoch += 1


def _merge(logs: list[dict[str, float]]) -> dict[str, float]:
    """One record from the micro-batches of a step: loss components averaged, CRT counts summed."""
    out: dict[str, float] = {}
    for k in logs[0]:
        vals = [lg[k] for lg in logs]
        out[k] = sum(vals) if k in COUNT_KEYS else sum(vals) / len(vals)
    return out


def train_vitask(
    model: nn.Module,
    processor: Any,
    objective: VITaskObjective,
    dataset: VITaskDataset,
    cfg: TrainConfig,
    *,
    steps: dict[int, int] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> VITaskResult:
    """Run stage 1 then stage 2 in this process; `steps` overrides the stage lengths from `cfg.vitask`.

    Trains every VLM parameter that requires grad after `freeze_groups` and, in stage 1, the connector.
    `on_step(record)` gets each optimizer step's record (stage, step, epoch, loss, components, lr).
    """
    if len(dataset) == 0:
        raise ValueError(f"no usable rows ({len(dataset.rejects)} rejected)")
    device = next(model.parameters()).device
    sampler = LengthGroupedBatchSampler(dataset.lengths, cfg.batch_size, seed=cfg.seed,
                                        group_by_length=cfg.group_by_length)
    steps = steps or stage_steps(cfg.vitask, math.ceil(len(sampler) / cfg.grad_accum))
    connector = {"params": list(objective.connector.parameters()), "lr": cfg.learning_rate, "name": "connector",
                 "weight_decay": 0.0}
    optimizer = torch.optim.AdamW(param_groups(model, cfg, freeze_groups(model, cfg)) + [connector],
                                  lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg, max(1, steps[1] + steps[2]))
    autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                           and torch.cuda.is_bf16_supported())
    collate = VITaskCollator(pad_token_id(processor), objective.tsm)
    log.info("vitask: %d examples, %d rejected, %d without a CRT negative; steps %s", len(dataset),
             len(dataset.rejects), dataset.n_without_negative, steps)
    history: list[dict[str, Any]] = []
    epoch, step = 0, 0
    model.train()
    objective.train()
    for stage in (1, 2):
        if not steps[stage]:
            continue
        objective.connector.requires_grad_(stage == 1)
        dataset.with_negatives = stage == 2  # negatives cost an extra encode; stage 1 does not use them
        batches = _batches(dataset, sampler, collate, cfg.dataloader_workers, cfg.seed, epoch)
        for _ in range(steps[stage]):
            logs = []
            for _ in range(cfg.grad_accum):
                vb, epoch = next(batches)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    out = objective(model, vb.positive, stage=stage, negative=vb.negative,
                                    negative_rows=vb.negative_rows)
                (out.total / cfg.grad_accum).backward()
                logs.append(out.logged)
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # the rates this step uses
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            merged = _merge(logs)
            rec = {"step": step, "stage": stage, "epoch": epoch, "loss": merged.pop("total"), **merged, "lr": lrs}
            history.append(rec)
            log.info("vitask stage %d step %d loss %.4f", stage, step, rec["loss"])
            if on_step is not None:
                on_step(rec)
        epoch += 1
    objective.connector.requires_grad_(False)
    model.eval()
    objective.eval()
    return VITaskResult(history, steps, len(dataset), dataset.n_without_negative)


def summarize(result: VITaskResult, rejects: list[dict[str, str]]) -> dict[str, Any]:
    """Metrics of a run: final loss components per stage and the CRT bookkeeping."""
    final = {}
    for stage in (1, 2):
        recs = [h for h in result.history if h["stage"] == stage]
        if recs:
            final[f"stage{stage}"] = {k: v for k, v in recs[-1].items() if k not in ("lr", "step", "stage", "epoch")}
    stage2 = [h for h in result.history if h["stage"] == 2]
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return {
        "steps": {f"stage{s}": n for s, n in result.steps.items()}, "examples": result.n_examples,
        "skipped": reasons, "final": final, "final_loss": result.history[-1]["loss"] if result.history else None,
        "crt": {"samples_used": sum(h["crt_used"] for h in stage2),
                "samples_without_negative": sum(h["crt_without_negative"] for h in stage2),
                "samples_without_tokens": sum(h["crt_without_tokens"] for h in stage2),
                "examples_without_negative": result.n_without_negative},
    }


def _trained_rows(data_dir: str | Path):
    rows = load_rows(data_files_in(data_dir))
    if "split" not in rows.column_names:
        return rows
    keep = [i for i, s in enumerate(rows["split"]) if s in TRAINED_SPLITS]
    if len(keep) < len(rows):
        log.warning("vitask: %d rows of splits other than %s are not trained on", len(rows) - len(keep), TRAINED_SPLITS)
    return rows.select(keep)


def uses_lora(cfg: TrainConfig) -> bool:
    """VITask tunes the LLM with LoRA unless `train.lora.enabled` is set to false (the paper's recipe)."""
    return True if cfg.lora.enabled is None else cfg.lora.enabled


def load_vlm(cfg: TrainConfig, path: str) -> nn.Module:
    """The VLM in fp32. With LoRA (`uses_lora`): adapters on the `lora.target_modules` of the language model
    only (never the vision encoder), and the projector trained in full unless `freeze_projector`."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    if not uses_lora(cfg):
        return model
    from peft import LoraConfig, get_peft_model

    suffixes = tuple(cfg.lora.target_modules)
    targets = [n for n, _ in model.named_modules()
               if module_group(n) == "language" and (n.split(".")[-1] in suffixes)]
    if not targets:
        raise ValueError(f"no language-model module ends with one of train.lora.target_modules={list(suffixes)}")
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                             target_modules=targets))
    if not cfg.freeze_projector:  # peft froze everything but the adapters
        for name, p in model.named_parameters():
            if module_group(name) == "projector" and "lora_" not in name:
                p.requires_grad_(True)
    return model


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train VITask on the Parquet dataset in `data_dir`; write the model, connector and logs to `out_dir`."""
    if cfg.num_workers > 1:
        raise NotImplementedError("vitask trains in one process; set train.num_workers=1")
    from posttrain.preflight import checked_processor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if (cfg.use_gpu if cfg.use_gpu is not None else torch.cuda.is_available()) else "cpu")
    path = cfg.model
    processor = checked_processor(path, cfg.model, cfg.max_length)
    model = load_vlm(cfg, path).to(device)
    reason = unsupported_reason(model, cfg.vitask.connector)
    if reason is not None:  # before any example is encoded
        raise NotImplementedError(f"vitask on {cfg.model}: {reason}")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # No final-turn truncation: CRT compares the same response tokens under two images.
    dataset = VITaskDataset(_trained_rows(data_dir), processor, EncodeOptions(max_length=cfg.max_length),
                            seed=cfg.seed)
    with open(out / "skipped.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in dataset.rejects)
    hidden = int(model.get_input_embeddings().embedding_dim)
    objective = VITaskObjective(load_tsm(cfg.vitask), hidden, cfg.vitask).to(device)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")

    def log_step(rec: dict[str, Any]) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    t0 = time.perf_counter()
    result = train_vitask(model, processor, objective, dataset, cfg, on_step=log_step)
    if uses_lora(cfg):
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out)  # the plain VLM: the connector and the TSM live in `objective`
    processor.save_pretrained(out)
    save_connector(objective.connector, out / CONNECTOR_FILE, tsm=str(cfg.vitask.tsm),
                   tsm_feature=cfg.vitask.tsm_feature)
    summary = {**summarize(result, dataset.rejects), "elapsed_s": time.perf_counter() - t0}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("vitask done: %s", summary["final"])
    return summary
