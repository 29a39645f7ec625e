"""Shared pieces of the probe scripts: web-like scan rows, informative-form general rows, one training run, a probe
model in the generalist's place, greedy answers and image tokens of a model."""
import random
import time
from pathlib import Path

from pipelines.core.contract import messages, write_dataset
from pipelines.experiments.miniworld import data, worlds
from pipelines.fixtures.sample_data import make_item
from pipelines.fixtures.sample_data.common import article
from posttrain.config import TrainConfig
from posttrain.train import train

FORMS = ["{A} {m} image of the {r}.", "{M} of the {r}.", "{M} scan showing the {r}.", "The {r} on {m}."]


def web_rows(n, seed, rng):
    """Scans with web-like alt-text: modality and region only, no findings."""
    rows = []
    for i in range(n):
        a, img, _ = make_item("biomed", i, seed, image_size=64)
        m, r = a["modality"], a["region"]
        cap = rng.choice(FORMS).format(A=article(m).capitalize(), m=m, M=m if m != "ultrasound" else "Ultrasound", r=r)
        rows.append({"id": f"web-{i}", "images": [img], "messages": messages([(data.CAPTION_PROMPT, cap)]),
                     "task_kind": "general", "split": "train"})
    return rows


def conversation(i, img, turns, rng, prefix):
    first = turns.pop(rng.randrange(len(turns)))
    return {"id": f"{prefix}-{i}", "images": [img], "messages": messages([first, *turns]), "task_kind": "general",
            "split": "train"}


def informative_rows(n, rng, seed=17):
    """General questions answered in the informative form (no short-answer suffix), with the caption."""
    rows = []
    for i in range(n):
        attrs, img, cap = worlds.make_general(i, seed=seed)
        tasks = rng.sample(worlds.general_tasks(attrs, rng), 2)
        turns = [(data.CAPTION_PROMPT, cap), *[(t["instruction"], t["informative"]) for t in tasks]]
        rows.append(conversation(i, img, turns, rng, "inf"))
    return rows


def train_on(rows, init, epochs, lr, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    random.Random(0).shuffle(rows)
    (out / "data").mkdir(exist_ok=True)
    write_dataset(str(out / "data" / "train-00000.parquet"), rows)
    train_dir(out / "data", init, epochs, lr, out)


def train_dir(data_dir: Path, init, epochs, lr, out: Path, seed=0):
    """SFT of `init` on the dataset in `data_dir`; the model lands in OUT/model, loadable as a generalist."""
    tc = TrainConfig(method="sft", model=str(init), epochs=epochs, learning_rate=lr, batch_size=16, max_length=512,
                     use_gpu=False, warmup_ratio=0.05, seed=seed, save_every_steps=100_000, keep_checkpoints=1)
    t0 = time.time()
    m = train(tc, data_dir, out / "model")
    (out / "model" / "miniworld_build.json").write_text("{}")  # lets the method check load it as a generalist
    print("train", {k: m.get(k) for k in ("step", "final_loss")}, round(time.time() - t0), flush=True)


def image_tokens(model_dir, seed, n):
    """The 16 image tokens a model's language side receives for n scans of `seed`: (n, 16, hidden), attributes."""
    import torch

    proc, m = load_vlm(model_dir)
    X, Y = [], []
    for i in range(n):
        a, img, _ = make_item("biomed", i, seed, image_size=64)
        pv = proc.image_processor(img, return_tensors="pt")
        with torch.no_grad():
            t = m.model.get_image_features(pv["pixel_values"], pv.get("pixel_attention_mask"))
        t = t if torch.is_tensor(t) else t[0]
        X.append(t.reshape(16, -1).float()); Y.append(a)
    return torch.stack(X), Y


def use_generalist(path):
    """Make the method check take the model at `path` as its generalist (the other miniworld models as built)."""
    from pipelines.experiments.miniworld import models

    orig = models.ensure
    models.ensure = lambda name: Path(path) if name == "generalist" else orig(name)


def load_vlm(model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(model_dir), AutoModelForImageTextToText.from_pretrained(model_dir).eval()


def ask(proc, model, img, prompt, max_new_tokens):
    """The model's greedy answer to `prompt` about `img`, in its chat template."""
    import torch

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    inp = proc(text=proc.apply_chat_template(msgs, add_generation_prompt=True), images=[img], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inp, max_new_tokens=max_new_tokens, do_sample=False)
    return proc.decode(out[0, inp["input_ids"].shape[1]:], skip_special_tokens=True)
