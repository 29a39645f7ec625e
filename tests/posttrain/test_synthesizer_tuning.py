"""Synthesizer tuning: conversation layout, caption turn masked, blank images, loadable output."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from posttrain.config import TrainConfig
from posttrain.encoding import IGNORE_INDEX
from posttrain.synthesizer_tuning import (
    INFORMATIVE_HINT,
    PRECISE_HINT,
    SynthesizerTuningRecipe,
    is_blank,
    synthesizer_messages,
)


def _png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def write_seed(path, n=12):
    qa = pa.struct([("instruction", pa.string()), ("precise", pa.string()), ("informative", pa.string())])
    schema = pa.schema([("id", pa.string()), ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
                        ("caption", pa.string()), ("qa", pa.list_(qa))])
    colors = ["red", "blue", "green"]
    rows = [{"id": f"s{i}", "images": [{"bytes": _png(colors[i % 3]), "path": None}],
             "caption": f"zebra caption {colors[i % 3]} cell",
             "qa": [{"instruction": "What color is the cell?", "precise": colors[i % 3],
                     "informative": f"The cell is {colors[i % 3]}."}]} for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return [str(path)]


def test_layout_and_seeded_pair_order():
    qa = [{"instruction": "Q1", "precise": "a", "informative": "A long."}, {"instruction": "Q2", "precise": "b", "informative": ""}]
    msgs = synthesizer_messages("cap", qa, seed="x")
    assert msgs[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Describe the image."}]
    assert msgs[1]["content"][0]["text"] == "cap"
    users = sorted(m["content"][0]["text"] for m in msgs[2::2])
    assert users == sorted([f"{PRECISE_HINT}\nQ1", f"{INFORMATIVE_HINT}\nQ1", f"{PRECISE_HINT}\nQ2"])
    assert synthesizer_messages("cap", qa, seed="x") == msgs
    orders = {tuple(m["content"][0]["text"] for m in synthesizer_messages("cap", qa, seed=s)[2::2]) for s in range(20)}
    assert len(orders) > 1


def test_blank_fraction_is_seeded_and_close_to_target():
    chosen = [is_blank(f"id{i}", 0.1, 0) for i in range(2000)]
    assert 0.08 < sum(chosen) / 2000 < 0.12
    assert chosen == [is_blank(f"id{i}", 0.1, 0) for i in range(2000)]
    assert not any(is_blank(f"id{i}", 0.0, 0) for i in range(100))


@pytest.fixture(scope="module")
def recipe(tiny_vlm_path, tmp_path_factory):
    files = write_seed(tmp_path_factory.mktemp("seed") / "seed.parquet")
    cfg = TrainConfig(model=tiny_vlm_path, method="synthesizer", batch_size=4, learning_rate=1e-3, warmup_ratio=0.0,
                      use_gpu=False, save_every_steps=100, blank_image_fraction=0.5)
    r = SynthesizerTuningRecipe(cfg, files, tmp_path_factory.mktemp("synth_out"))
    r.setup()
    return r


def test_caption_turn_masked_instructions_trained(recipe):
    ex = recipe.dataset[0]
    tok = recipe.processor.tokenizer
    trained = tok.decode(ex["input_ids"][ex["labels"] != IGNORE_INDEX])
    context = tok.decode(ex["input_ids"][ex["labels"] == IGNORE_INDEX])
    assert "zebra" in context and "zebra" not in trained and "Describe" not in trained
    assert PRECISE_HINT in trained and INFORMATIVE_HINT in trained and "What color is the cell?" in trained
    assert "The cell is" in trained


def test_blank_images_replace_pixels(recipe):
    rows = recipe.dataset.rows
    blank = [i for i in range(len(rows)) if is_blank(rows[i]["id"], 0.5, 0)]
    kept = [i for i in range(len(rows)) if i not in blank]
    assert blank and kept
    tf = recipe.image_transform()
    img = Image.open(io.BytesIO(rows[blank[0]]["images"][0]["bytes"]))
    assert tf(rows[blank[0]], [img])[0].getcolors() == [(32 * 32, (255, 255, 255))]
    assert tf(rows[kept[0]], [img])[0] is img


def test_tuned_synthesizer_loads(recipe):
    m = recipe.train()
    assert m["step"] == 3 and m["skipped"] == {}
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(recipe.out_dir)
    proc = AutoProcessor.from_pretrained(recipe.out_dir)
    msgs = synthesizer_messages("a red cell", [], seed=0)
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    enc = proc(text=[prompt], images=[[Image.new("RGB", (32, 32), "red")]], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3 or out[0, -1] == proc.tokenizer.eos_token_id
