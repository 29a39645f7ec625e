"""Training benchmark: our SFT recipe vs HF `Trainer`, both length-grouped, on the same data and model.

    python pipelines/bench.py train [--examples 192] [--batch-size 8] [--threads 1] [--repeats 3] [--model tiny://vlm]

Both train one epoch on the same encoded dataset with the same collator. Made fair (issue 16): HF groups
by length too (`train_sampling_strategy="group_by_length"`), precision matches (bf16 autocast on both or
on neither), neither clips gradients, the first `--warmup-steps` steps are excluded from both rates, and
runs alternate ours/HF `--repeats` times (min/median/max). `--plain-hf` adds the old baseline (HF without
length grouping) so the part of the gain that is only length grouping is visible. With `trl` importable
(the optional `bench` extra), TRL's `SFTTrainer` is a third side in the same alternation, made fair the same
way (pipelines/benches/trl_side.py); `--no-trl` leaves it out. Throughput is real (non-pad) tokens per second. Shares its measuring code with `pipelines/bench.py gpu` (pipelines/benches/gpu.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipelines.benches.common import _Counting, make_dataset
from pipelines.benches.common import spread as _spread
from pipelines.refs import resolve_model
from posttrain.config import TrainConfig
from posttrain.sft import SFTRecipe


def run_ours(cfg: TrainConfig, files: list[str], out: Path) -> dict:
    r = SFTRecipe(cfg, files, out)
    r.setup()
    m = r.train()
    return {"tokens_per_s": m["tokens_per_s"], "pad_fraction": m["pad_fraction"], "tokens": m["tokens"],
            "seconds": m["elapsed_s"], "steps": m["step"]}


def run_hf_trainer(cfg: TrainConfig, files: list[str], out: Path) -> dict:
    from transformers import Trainer, TrainingArguments

    r = SFTRecipe(cfg, files, out / "setup")  # same model, processor and encoded dataset
    r.setup()
    collator = _Counting(r.collator, drop_ids=True)
    args = TrainingArguments(
        output_dir=str(out / "hf"), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=0, weight_decay=0.0,
        logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=r.device.type == "cpu",
        dataloader_num_workers=0, remove_unused_columns=False, seed=cfg.seed,
        bf16=r.autocast, max_grad_norm=0.0,  # matched to our recipe: same autocast, no clipping
    )
    trainer = Trainer(model=r.module, args=args, train_dataset=r.dataset, data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": collator.real / seconds, "pad_fraction": 1 - collator.real / max(collator.slots, 1),
            "tokens": collator.real, "seconds": seconds, "steps": trainer.state.global_step}


def main(argv: list[str] | None = None) -> int:
    from pipelines.benches.gpu import compare_training

    p = argparse.ArgumentParser(prog="pipelines/bench.py train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny://vlm", help="model reference (hub id, path, tiny://vlm)")
    p.add_argument("--examples", type=int, default=192, help="synthetic examples")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    p.add_argument("--repeats", type=int, default=3, help="runs per side, alternating ours/HF")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps excluded from each rate")
    p.add_argument("--trl", action=argparse.BooleanOptionalAction, default=None,
                   help="TRL SFTTrainer as a third side (default: when trl imports)")
    p.add_argument("--plain-hf", action="store_true", help="also time HF Trainer without length grouping, once")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pipelines.benches.trl_side import version

    result: dict = {"trl": version(), "model": args.model, "examples": args.examples, "batch_size": args.batch_size,
                    "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup_steps": args.warmup_steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root / "d.parquet", args.examples)
        files = [str(root / "d.parquet")]
        cfg = TrainConfig(model=resolve_model(args.model), batch_size=args.batch_size, learning_rate=1e-4, warmup_ratio=0.0,
                          max_length=1024, save_every_steps=10_000, lr_scheduler="linear")
        runs, _, _, _ = compare_training(cfg, files, root, args.repeats, args.warmup_steps, with_trl=args.trl)
        for side, rs in runs.items():
            result[side] = {"tokens_per_s": _spread([r["tokens_per_s"] for r in rs]),
                            "pad_fraction": rs[-1]["pad_fraction"], "steps": rs[-1]["steps"]}
        if args.plain_hf:
            plain = run_hf_trainer(cfg, files, root / "plain")
            result["hf_trainer_no_grouping"] = {k: plain[k] for k in ("tokens_per_s", "pad_fraction", "steps")}
    result["ratio_median"] = result["ours"]["tokens_per_s"]["median"] / result["hf_trainer"]["tokens_per_s"]["median"]
    if "trl_sft" in result:
        result["ratio_vs_trl_median"] = result["ours"]["tokens_per_s"]["median"] / result["trl_sft"]["tokens_per_s"]["median"]
    result["targets"] = {"ratio_ge_1": result["ratio_median"] >= 1.0, "padding_le_10pct": result["ours"]["pad_fraction"] <= 0.10}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
