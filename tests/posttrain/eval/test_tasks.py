"""Loaders read tiny fixtures in each benchmark's published layout; unusable items become rejects."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from posttrain.eval.examples import LoadResult, read_image_file, to_pil
from posttrain.eval.tasks import TASKS, UnknownTaskError, get_task, template


def png(color=(200, 10, 10), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def check_examples(res: LoadResult) -> None:
    for e in res.examples:
        assert e.id and e.question and e.answer
        assert to_pil(e.image).mode == "RGB"
        if e.answer_type in ("choice", "classification"):
            assert e.choices


def reasons(res: LoadResult) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in res.rejects}


def test_every_task_has_a_prompt_and_renders(tmp_path):
    from posttrain.eval.examples import Example

    for spec in TASKS.values():
        text = spec.render(Example("x", b"", "Which organ?", "A", "choice", ["liver", "lung"]))
        assert "Which organ?" in text and "{" not in text, spec.name
        assert template(spec.prompt).strip()
    with pytest.raises(UnknownTaskError, match="known tasks"):
        get_task("nope")


def test_slake(tmp_path):
    put(tmp_path / "imgs/xmlab1/source.jpg", png())
    entries = [
        {"qid": 1, "img_name": "xmlab1/source.jpg", "question": "Is the lung healthy?", "answer": "No",
         "answer_type": "CLOSED", "q_lang": "en"},
        {"qid": 2, "img_name": "xmlab1/source.jpg", "question": "Which organ?", "answer": "Liver ",
         "answer_type": "OPEN", "q_lang": "en"},
        {"qid": 3, "img_name": "xmlab1/source.jpg", "question": "这是什么?", "answer": "肝", "answer_type": "OPEN",
         "q_lang": "zh"},
        {"qid": 4, "img_name": "xmlab9/source.jpg", "question": "Where?", "answer": "left", "answer_type": "OPEN",
         "q_lang": "en"},
        {"qid": 5, "img_name": "xmlab1/source.jpg", "question": "What?", "answer": "", "answer_type": "OPEN",
         "q_lang": "en"},
        {"qid": 6, "img_name": "../../etc/passwd", "question": "What?", "answer": "x", "answer_type": "OPEN",
         "q_lang": "en"},
    ]
    put(tmp_path / "test.json", json.dumps(entries))
    res = get_task("slake").load(tmp_path)
    check_examples(res)
    assert [(e.id, e.answer_type, e.answer) for e in res.examples] == [
        ("slake-1", "closed", "No"), ("slake-2", "open", "Liver")]
    assert reasons(res) == {"slake-3": "other_language", "slake-4": "missing_image", "slake-5": "empty_answer",
                            "slake-6": "path_escape"}
    assert len(get_task("slake").load(tmp_path, limit=1).examples) == 1


def test_vqa_rad_json_layout(tmp_path):
    put(tmp_path / "VQA_RAD Image Folder/synpic1.jpg", png())
    entries = [
        {"qid": 10, "image_name": "synpic1.jpg", "question": "Is there a fracture?", "answer": "yes",
         "answer_type": "CLOSED ", "phrase_type": "test_freeform"},
        {"qid": 11, "image_name": "synpic1.jpg", "question": "How many?", "answer": 2, "answer_type": "OPEN",
         "phrase_type": "test_para"},
        {"qid": 12, "image_name": "synpic1.jpg", "question": "Train q?", "answer": "no", "answer_type": "CLOSED",
         "phrase_type": "freeform"},
    ]
    put(tmp_path / "VQA_RAD Dataset Public.json", json.dumps(entries))
    res = get_task("vqa_rad").load(tmp_path)
    assert [(e.id, e.answer_type, e.answer) for e in res.examples] == [
        ("vqa_rad-10", "closed", "yes"), ("vqa_rad-11", "open", "2")]
    assert [e.id for e in get_task("vqa_rad").load(tmp_path, split="train").examples] == ["vqa_rad-12"]


def hf_parquet(path: Path, rows: list[dict]) -> None:
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([r["image"] for r in rows], type=img_type),
        "question": [r["question"] for r in rows],
        "answer": [r["answer"] for r in rows],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_pathvqa_and_vqa_rad_hf_parquet(tmp_path):
    rows = [
        {"image": {"bytes": png(), "path": None}, "question": "Is this benign?", "answer": "Yes"},
        {"image": {"bytes": png((0, 0, 0)), "path": None}, "question": "What is seen?", "answer": "necrosis"},
        {"image": {"bytes": None, "path": None}, "question": "Broken?", "answer": "no"},
    ]
    hf_parquet(tmp_path / "data/test-00000-of-00001.parquet", rows)
    hf_parquet(tmp_path / "data/train-00000-of-00001.parquet", rows[:1])
    for task in ("pathvqa", "vqa_rad"):
        res = get_task(task).load(tmp_path)
        check_examples(res)
        assert [(e.answer_type, e.answer) for e in res.examples] == [("closed", "Yes"), ("open", "necrosis")]
        assert list(reasons(res).values()) == ["missing_image"]
    assert len(get_task("pathvqa").load(tmp_path, split="train").examples) == 1


def test_pmc_vqa(tmp_path):
    put(tmp_path / "images/PMC1_fig1.jpg", png())
    rows = [
        {"index": "0", "Figure_path": "PMC1_fig1.jpg", "Question": "What modality?", "Answer": "CT scan",
         "Choice A": "A:MRI ", "Choice B": "B:CT scan", "Choice C": "C:X-ray", "Choice D": "D:PET",
         "Answer_label": "B"},
        {"index": "1", "Figure_path": "PMC1_fig1.jpg", "Question": "Which organ?", "Answer": "Liver",
         "Choice A": "A: Kidney", "Choice B": "B: Liver", "Choice C": "C: Lung", "Choice D": "D: Heart",
         "Answer_label": ""},
        {"index": "2", "Figure_path": "PMC1_fig1.jpg", "Question": "Odd?", "Answer": "Spleen",
         "Choice A": "A:a", "Choice B": "B:b", "Choice C": "C:c", "Choice D": "D:d", "Answer_label": ""},
        {"index": "3", "Figure_path": "missing.jpg", "Question": "Gone?", "Answer": "a",
         "Choice A": "A:a", "Choice B": "B:b", "Choice C": "C:c", "Choice D": "D:d", "Answer_label": "A"},
    ]
    with open(tmp_path / "test_clean.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = get_task("pmc_vqa").load(tmp_path)
    check_examples(res)
    assert [(e.answer, e.choices) for e in res.examples] == [
        ("B", ["MRI", "CT scan", "X-ray", "PET"]), ("B", ["Kidney", "Liver", "Lung", "Heart"])]
    assert reasons(res) == {"pmc_vqa-2": "answer_not_in_choices", "pmc_vqa-3": "missing_image"}


def test_attributes_table(tmp_path):
    for name in ("cell1.png", "cell2.png", "cell3.png"):
        put(tmp_path / "images" / name, png())
    rows = [
        {"path": "cell1.png", "cell_size": "big", "nucleus_shape": "segmented", "label": "Neutrophil", "note": "a"},
        {"path": "cell2.png", "cell_size": "small", "nucleus_shape": "unsegmented", "label": "Lymphocyte",
         "note": "b"},
        {"path": "cell3.png", "cell_size": "", "nucleus_shape": "segmented", "label": "Neutrophil", "note": "c"},
    ]
    with open(tmp_path / "attributes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = get_task("attributes").load(tmp_path, max_options=2)
    check_examples(res)
    ex = {e.id: e for e in res.examples}
    assert ex["attr-0-cell_size"].choices == ["big", "small"] and ex["attr-0-cell_size"].answer == "A"
    assert ex["attr-1-nucleus_shape"].answer == "B"
    assert "What is the nucleus shape" in ex["attr-1-nucleus_shape"].question
    assert not any("note" in i for i in ex)  # 3 distinct values > max_options: column skipped
    assert reasons(res) == {"attr-2-cell_size": "empty_answer"}


def test_medmnist(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pathmnist.npz", test_images=rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8),
             test_labels=np.array([[0], [2], [7]]))
    (tmp_path / "labels.json").write_text(json.dumps({"0": "adipose", "1": "background", "2": "debris"}))
    res = get_task("medmnist").load(tmp_path)
    check_examples(res)
    assert [(e.answer, e.answer_type) for e in res.examples] == [("adipose", "classification"),
                                                                   ("debris", "classification")]
    assert res.examples[0].choices == ["adipose", "background", "debris"]
    assert reasons(res) == {"pathmnist-test-2": "bad_label"}


def test_recipe1m(tmp_path):
    layer1 = [
        {"id": "abc1", "title": "Tomato soup", "partition": "test", "ingredients": [{"text": "tomatoes"},
         {"text": "salt"}], "instructions": [{"text": "Boil."}, {"text": "Blend."}]},
        {"id": "abc2", "title": "Bread", "partition": "test", "ingredients": [{"text": "flour"}],
         "instructions": [{"text": "Bake."}]},
        {"id": "abc3", "title": "Pie", "partition": "train", "ingredients": [], "instructions": []},
    ]
    layer2 = [{"id": "abc1", "images": [{"id": "3e233001e2.jpg"}]}, {"id": "abc2", "images": [{"id": "ffff0.jpg"}]}]
    put(tmp_path / "layer1.json", json.dumps(layer1))
    put(tmp_path / "layer2.json", json.dumps(layer2))
    put(tmp_path / "test/3/e/2/3/3e233001e2.jpg", png())
    res = get_task("recipe1m").load(tmp_path)
    check_examples(res)
    assert [e.id for e in res.examples] == ["recipe1m-abc1"]
    assert res.examples[0].answer == "Tomato soup\nIngredients: tomatoes, salt\nInstructions: Boil. Blend."
    assert res.examples[0].answer_type == "generation"
    assert reasons(res) == {"recipe1m-abc2": "missing_image"}


def test_nutrition5k(tmp_path):
    put(tmp_path / "metadata/dish_metadata_cafe1.csv",
        "dish_1,300.0,200.0,10.0,20.0,5.0,ingr_1,rice,100.0,130.0,0.3,28.0,2.7,ingr_2,black beans,50.0,60.0,"
        "0.2,10.0,4.0\n"
        "dish_2,100.0,50.0,1.0,2.0,3.0,ingr_3,apple,50.0,26.0,0.1,7.0,0.2\n"
        "dish_3,100.0,50.0,1.0,2.0,3.0,ingr_3,apple,50.0,26.0,0.1,7.0,0.2\n")
    put(tmp_path / "imagery/realsense_overhead/dish_1/rgb.png", png())
    put(tmp_path / "dish_ids/splits/rgb_test_ids.txt", "dish_1\ndish_2\n")
    res = get_task("nutrition5k").load(tmp_path)
    check_examples(res)
    assert [(e.id, e.answer, e.answer_type) for e in res.examples] == [
        ("nutrition5k-dish_1", ["rice", "black beans"], "set")]
    assert reasons(res) == {"nutrition5k-dish_2": "missing_image"}  # dish_3 is not in the test split


def test_food101(tmp_path):
    put(tmp_path / "meta/classes.txt", "apple_pie\nbaby_back_ribs\n")
    put(tmp_path / "meta/labels.txt", "Apple pie\nBaby back ribs\n")
    put(tmp_path / "meta/test.txt", "apple_pie/101\nbaby_back_ribs/7\nsushi/1\n")
    put(tmp_path / "images/apple_pie/101.jpg", png())
    put(tmp_path / "images/baby_back_ribs/7.jpg", png())
    res = get_task("food101").load(tmp_path)
    check_examples(res)
    assert [(e.answer, e.choices) for e in res.examples] == [("Apple pie", ["Apple pie", "Baby back ribs"]),
                                                            ("Baby back ribs", ["Apple pie", "Baby back ribs"])]
    assert reasons(res) == {"food101-sushi-1": "unknown_label"}


def test_foodseg103(tmp_path):
    root = tmp_path / "FoodSeg103"
    put(root / "category_id.txt", "0\tbackground\n1\tcandy\n2\tegg tart\n3\trice\n")
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:2] = 3
    mask[5:] = 1
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    put(root / "Images/img_dir/test/00000001.jpg", png())
    put(root / "Images/ann_dir/test/00000001.png", buf.getvalue())
    bad = mask.copy()
    bad[0, 0] = 99
    buf = io.BytesIO()
    Image.fromarray(bad).save(buf, format="PNG")
    put(root / "Images/img_dir/test/00000002.jpg", png())
    put(root / "Images/ann_dir/test/00000002.png", buf.getvalue())
    put(root / "Images/img_dir/test/00000003.jpg", png())
    res = get_task("foodseg103").load(tmp_path)
    check_examples(res)
    assert [(e.answer, e.answer_type) for e in res.examples] == [(["candy", "rice"], "multilabel")]
    assert res.examples[0].choices == ["candy", "egg tart", "rice"]
    assert reasons(res) == {"foodseg103-00000002": "unknown_label", "foodseg103-00000003": "missing_image"}


def test_read_image_file_rejects_escape(tmp_path):
    res = LoadResult()
    put(tmp_path / "outside.png", png())
    assert read_image_file(res, "x", tmp_path / "root", "../outside.png") is None
    assert res.rejects[0]["reason"] == "path_escape" and res.rejects[0]["stage"] == "eval_load"
