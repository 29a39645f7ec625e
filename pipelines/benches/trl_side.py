"""TRL's `SFTTrainer` as a third side of the training benches (`bench.py train`, `bench.py gpu`), when `trl` imports.

`trl` is optional (the `bench` extra): `available()` says whether it imports, and the benches skip this side
without it. Same model (the recipe's own module, initialised the same way), same rows, batch size, learning
rate and schedule as the other sides. TRL's own data path is used as TRL documents it for vision-language
data: the raw `messages` + `images` rows, tokenised and image-processed per batch by its
`DataCollatorForVisionLanguageModeling` (our recipe also encodes in `__getitem__`, so both pay it in the
window). Made fair like the HF side: precision matched (TRL's default `bf16=True` set to the recipe's autocast
setting), gradient checkpointing matched (TRL defaults it on; the recipe's setting is used), no clipping
(`max_grad_norm=0`), length grouping through HF's sampler on a `length` column holding each row's encoded
length (the lengths our recipe groups by), first `warmup` steps excluded. Loss masking differs and is left as
TRL's default (all tokens; `assistant_only_loss` needs `{% generation %}` markers that the tiny chat template
lacks): it changes which labels are -100, not the work per step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch


def version() -> str:
    """`trl`'s version, or 'not installed'."""
    try:
        import trl
    except ImportError:
        return "not installed"
    return trl.__version__


def available() -> bool:
    return version() != "not installed"


def run_trl(cfg, files: list[str], out: Path, warmup: int, recipe_class) -> dict[str, Any]:
    """One TRL `SFTTrainer` epoch; tokens/s over real tokens after `warmup` steps, padding, steps."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from pipelines.benches.common import rate_after
    from posttrain.dataset import load_rows

    r = recipe_class(cfg, files, out / "setup")  # same model construction, processor and usable rows
    r.setup()
    rows = load_rows(files).select(r.dataset.index).select_columns(["images", "messages"])
    rows = rows.add_column("length", list(r.dataset.lengths))
    args = SFTConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=0, weight_decay=0.0,
        logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=r.device.type == "cpu",
        bf16=r.autocast, gradient_checkpointing=cfg.gradient_checkpointing, max_grad_norm=0.0,
        max_length=cfg.max_length, dataloader_num_workers=0, remove_unused_columns=False, seed=cfg.seed,
        train_sampling_strategy="group_by_length", length_column_name="length",
    )
    stamps: list[tuple[float, int]] = []
    per_batch: list[tuple[int, int]] = []  # (real, padded slots) of each collated batch, in training order

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if r.device.type == "cuda":
                torch.cuda.synchronize()
            # the loader collates one batch ahead: count only the batches of finished steps
            stamps.append((time.perf_counter(), sum(b[0] for b in per_batch[: state.global_step])))

    trainer = SFTTrainer(model=r.module, args=args, train_dataset=rows, processing_class=r.processor,
                         callbacks=[Stamp()])
    inner = trainer.data_collator

    def collate(examples):
        batch = inner([{k: v for k, v in ex.items() if k != "length"} for ex in examples])
        per_batch.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
        return batch

    trainer.data_collator = collate
    for cb in (PrinterCallback, ProgressCallback):  # they print to stdout; the benches print one JSON result
        trainer.remove_callback(cb)
    trainer.train()
    real, slots = sum(b[0] for b in per_batch), sum(b[1] for b in per_batch)
    return {"tokens_per_s": rate_after(stamps, warmup), "pad_fraction": 1 - real / max(slots, 1), "tokens": real,
            "steps": trainer.state.global_step, "module": r.module}
