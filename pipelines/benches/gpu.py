"""`pipelines/bench.py gpu`: one prepared GPU check, one JSON line of figures.

    python pipelines/bench.py gpu                # on a CUDA machine: a ~2.2B random-weight VLM, bf16
    python pipelines/bench.py gpu --dry-run      # the same code path on CPU with a tiny model, in seconds

Needs torch + transformers only (no vLLM, no Ray). Measures, on one device:

1. Post-training tokens/s and model FLOPs utilisation of our `SFTRecipe` against HF `Trainer` on the same
   model (built from a config: SmolVLM2-2.2B shape, Idefics3 with a Llama text model and a SigLIP-so400m
   vision tower; weights random), the same encoded data, batch size and collator. Made fair: both group
   batches by length (HF `train_sampling_strategy="group_by_length"`), both keep fp32 weights under bf16
   autocast, neither clips gradients (our recipe does not clip; HF's default max_grad_norm=1 is set to 0),
   the first `--warmup-steps` steps are excluded from both, and runs alternate ours/HF/ours/HF...
   (`--repeats` each) with min/median/max reported. With `trl` importable (optional), TRL's `SFTTrainer`
   is a third side, made fair the same way (pipelines/benches/trl_side.py); without it `"trl": "not installed"`.
2. Images/s of the transformers synthesis engine (`pipelines.core.engines.TransformersEngine`) on the same model.
3. With vLLM installed: says so and points at `bench.py synth`; without it: `"vllm": "not installed"`.

MFU = model FLOPs per second / the device's dense bf16 peak (`--peak-tflops`, default 989 for H100/H200).
Model FLOPs per trained token = 6 x (text-model parameters, embeddings excluded, LM head included), plus per
image 6 x vision parameters x patches; attention's quadratic term is left out (short sequences here).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipelines.benches import trl_side
from pipelines.benches.common import rate_after as _rate
from pipelines.benches.common import spread

SIZES = {
    # SmolVLM2-2.2B shape: SmolLM2-1.7B text model + SigLIP so400m/14 at 384 px, pixel shuffle 3 -> 81 tokens.
    "2b": {"text": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                        num_key_value_heads=32, max_position_embeddings=8192, vocab_size=49280),
           "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                          image_size=384, patch_size=14),
           "scale_factor": 3, "image_seq_len": 81},
    "tiny": {"text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, max_position_embeddings=2048, vocab_size=1024),
             "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                            image_size=32, patch_size=8),
             "scale_factor": 2, "image_seq_len": 4},
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def build_model_folder(out: Path, size: str) -> Path:
    """Config + processor (offline BPE tokenizer of the tiny models) in `out`; weights are made at load time."""
    from transformers import (
        Idefics3Config,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    from pipelines.fixtures.tiny import _asset, _token_ids, build_tokenizer

    spec = SIZES[size]
    tok = build_tokenizer()
    tok.chat_template = _asset("chat_template.jinja")
    ids = _token_ids(tok)
    text = dict(spec["text"], model_type="llama", pad_token_id=ids["pad"], bos_token_id=ids["bos"],
                eos_token_id=ids["eos"])
    text["vocab_size"] = max(text["vocab_size"], len(tok))
    config = Idefics3Config(text_config=text, vision_config=spec["vision"], scale_factor=spec["scale_factor"],
                            image_token_id=ids["image"], pad_token_id=ids["pad"], tie_word_embeddings=False)
    config.save_pretrained(out)
    side = spec["vision"]["image_size"]
    proc = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size={"longest_edge": side}, max_image_size={"longest_edge": side},
                                                  do_image_splitting=False),
        tokenizer=tok, image_seq_len=spec["image_seq_len"], chat_template=tok.chat_template)
    proc.save_pretrained(out)
    return out


def _recipe_class():
    from posttrain.sft import SFTRecipe

    class RandomInitRecipe(SFTRecipe):
        """SFTRecipe whose model is initialised from the folder's config on the device (no weight files)."""

        def load_module(self):
            from transformers import AutoConfig, AutoModelForImageTextToText

            from pipelines.refs import resolve_model

            torch.manual_seed(self.cfg.seed)
            config = AutoConfig.from_pretrained(resolve_model(self.cfg.model))
            with torch.device(self.device):
                return AutoModelForImageTextToText.from_config(config, dtype=torch.float32)

    return RandomInitRecipe


def param_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(text parameters without the token embeddings, vision-tower parameters)."""
    text = vision = 0
    for name, p in module.named_parameters():
        if "vision_model" in name:
            vision += p.numel()
        elif "embed_tokens" not in name:
            text += p.numel()
    return text, vision


def run_ours(cfg, files: list[str], out: Path, warmup: int) -> dict[str, Any]:
    r = _recipe_class()(cfg, files, out)
    r.setup()
    m = r.train()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stamps = [(s["elapsed_s"], s["tokens"]) for s in steps]
    return {"tokens_per_s": _rate(stamps, warmup), "pad_fraction": m["pad_fraction"], "tokens": m["tokens"],
            "steps": m["step"], "module": r.module, "dataset": r.dataset}


def run_hf(cfg, files: list[str], out: Path, warmup: int) -> dict[str, Any]:
    from dataclasses import fields

    from transformers import (
        PrinterCallback,
        ProgressCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from pipelines.benches.common import _Counting

    r = _recipe_class()(cfg, files, out / "setup")
    r.setup()
    collator = _Counting(r.collator, drop_ids=True)
    names = {f.name for f in fields(TrainingArguments)}
    group = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in names
             else {"group_by_length": True})
    args = TrainingArguments(
        output_dir=str(out / "hf"), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=0, weight_decay=0.0,
        logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=r.device.type == "cpu",
        bf16=r.autocast, max_grad_norm=0.0, dataloader_num_workers=0, remove_unused_columns=False, seed=cfg.seed,
        **group,
    )
    stamps: list[tuple[float, int]] = []
    per_batch: list[int] = []  # real tokens of each collated batch, in the order they are trained

    def collate(examples):
        batch = collator(examples)
        per_batch.append(int(batch["attention_mask"].sum()))
        return batch

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if r.device.type == "cuda":
                torch.cuda.synchronize()
            # accelerate's loader collates one batch ahead: count only the batches of finished steps
            stamps.append((time.perf_counter(), sum(per_batch[: state.global_step])))

    trainer = Trainer(model=r.module, args=args, train_dataset=r.dataset, data_collator=collate, callbacks=[Stamp()])
    for cb in (PrinterCallback, ProgressCallback):  # they print dicts to stdout; the bench prints one JSON line
        trainer.remove_callback(cb)
    trainer.train()
    return {"tokens_per_s": _rate(stamps, warmup), "pad_fraction": 1 - collator.real / max(collator.slots, 1),
            "tokens": collator.real, "steps": trainer.state.global_step, "module": r.module}


def compare_training(cfg, files: list[str], root: Path, repeats: int, warmup: int, keep_last: bool = False,
                     with_trl: bool | None = None):
    """Alternate ours / HF Trainer (/ TRL) `repeats` times each; (runs by side, (text, vision) params, examples,
    module). TRL's `SFTTrainer` is a side when `with_trl`, by default when `trl` imports (it is optional).

    `module` is the model of the last run of ours when `keep_last` (for the engine rate), else None.
    """
    sides = [("ours", run_ours), ("hf_trainer", run_hf)]
    if trl_side.available() if with_trl is None else with_trl:
        recipe = _recipe_class()
        sides.append(("trl_sft", lambda c, f, o, w: trl_side.run_trl(c, f, o, w, recipe)))
    runs: dict[str, list[dict]] = {side: [] for side, _ in sides}
    module = counts = n_images = None
    for k in range(repeats):  # alternate: ours, HF, (TRL,) ours, HF, (TRL,) ...
        for side, fn in sides:
            r = fn(cfg, files, root / f"{side}{k}", warmup)
            if counts is None:
                counts, n_images = param_counts(r["module"]), len(r["dataset"])
            m = r.pop("module")
            r.pop("dataset", None)
            runs[side].append(r)
            if keep_last and side == "ours" and k == repeats - 1:
                module = m  # every other run's model is freed before the next run
            del m
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return runs, counts, n_images, module


def engine_rate(folder: Path, module: torch.nn.Module, device: str, n_images: int, max_tokens: int) -> dict[str, Any]:
    """Images/s of the transformers synthesis engine on the trained random model (saved in bf16 for it)."""
    from PIL import Image

    from pipelines.config import load_config
    from pipelines.core.engines import GenRequest, SamplingSettings, make_engine
    from synth.prompt import load_preset, render_prompt

    module.to(torch.bfloat16).save_pretrained(folder)
    res = load_config("biomed", "tiny", ["synth.engine=transformers", f"synth.device={device}",
                                         "synth.dtype=bfloat16"]).synth
    eng = make_engine(str(folder), res, sampling=SamplingSettings(max_tokens=max_tokens, temperature=0.0),
                      multimodal=True, max_model_len=2048)
    preset = load_preset(load_config("biomed", "tiny", []).synth.preset)
    reqs = [GenRequest(prompt=render_prompt(preset, f"A chest X-ray, image {i}, no findings.", None, eng.processor),
                       images=[Image.new("RGB", (512, 384), (i * 7 % 255, 90, 30))]) for i in range(n_images)]
    eng.generate(reqs[: res.batch_size])  # warm-up, excluded
    t0 = time.perf_counter()
    outs = [o for i in range(0, len(reqs), res.batch_size) for o in eng.generate(reqs[i : i + res.batch_size])]
    dt = time.perf_counter() - t0
    eng.close()
    return {"images_per_s": len(outs) / dt, "output_tokens_per_s": sum(o.n_output_tokens for o in outs) / dt,
            "images": len(outs), "batch_size": res.batch_size, "max_tokens": max_tokens}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pipelines/bench.py gpu", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="Tiny model on CPU, few examples: checks the code path.")
    p.add_argument("--examples", type=int, default=256, help="Training examples per run.")
    p.add_argument("--batch-size", type=int, default=8, help="Examples per step (both sides).")
    p.add_argument("--repeats", type=int, default=3, help="Runs per side, alternating ours/HF.")
    p.add_argument("--warmup-steps", type=int, default=3, help="Steps excluded from each rate.")
    p.add_argument("--engine-images", type=int, default=64, help="Images for the transformers engine rate.")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="Dense bf16 peak (0: from the device name).")
    args = p.parse_args(argv)
    if args.dry_run:
        args.examples, args.batch_size, args.repeats, args.warmup_steps, args.engine_images = 12, 4, 2, 1, 2
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print(json.dumps({"error": "no CUDA device; use --dry-run to check the code path on CPU"}))
        return 2
    from pipelines.benches.common import make_dataset
    from posttrain.config import TrainConfig

    size = "2b" if cuda else "tiny"
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    res: dict[str, Any] = {"device": name, "size": size, "dry_run": args.dry_run, "examples": args.examples,
                           "batch_size": args.batch_size, "warmup_steps": args.warmup_steps,
                           "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = build_model_folder(root / "model", size)
        make_dataset(root / "d.parquet", args.examples)
        cfg = TrainConfig(model=str(folder), batch_size=args.batch_size, learning_rate=1e-5, warmup_ratio=0.0,
                          max_length=2048, save_every_steps=10**9, lr_scheduler="linear", precision="auto",
                          use_gpu=cuda, group_by_length=True)
        runs, (text_p, vision_p), n_images, module = compare_training(
            cfg, [str(root / "d.parquet")], root, args.repeats, args.warmup_steps, keep_last=True)
        spec = SIZES[size]
        patches = (spec["vision"]["image_size"] // spec["vision"]["patch_size"]) ** 2
        # Model FLOPs per real trained token: 6 x text params, plus each image's vision-tower work spread over
        # the epoch's tokens (one image per example).
        flops_per_token = 6.0 * text_p + 6.0 * vision_p * patches * n_images / max(runs["ours"][-1]["tokens"], 1)
        for side, rs in runs.items():
            rates = [r["tokens_per_s"] for r in rs]
            res[side] = {"tokens_per_s": spread(rates), "pad_fraction": rs[-1]["pad_fraction"], "steps": rs[-1]["steps"],
                         "mfu": spread([x * flops_per_token / (peak * 1e12) for x in rates]) if peak else None}
        res["ratio_median"] = res["ours"]["tokens_per_s"]["median"] / res["hf_trainer"]["tokens_per_s"]["median"]
        res["trl"] = trl_side.version()
        if "trl_sft" in res:
            res["ratio_vs_trl_median"] = res["ours"]["tokens_per_s"]["median"] / res["trl_sft"]["tokens_per_s"]["median"]
        res["peak_tflops"] = peak or None
        res["params_b"] = round((text_p + vision_p) / 1e9, 3)
        res["model_tflop_per_token"] = flops_per_token / 1e12
        res["engine_transformers"] = engine_rate(root / "model", module, "cuda" if cuda else "cpu",
                                                 args.engine_images, 8 if args.dry_run else 64)
    try:
        import vllm  # noqa: F401

        res["vllm"] = "installed: run `python pipelines/bench.py synth synth.device=cuda` for stage vs bare vLLM"
    except ImportError:
        res["vllm"] = "not installed"
    print(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
