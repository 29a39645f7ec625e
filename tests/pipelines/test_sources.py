"""Shard readers: every format, stable ids, limits, resume filtering, malformed records, one-line input errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.config import InputConfig
from pipelines.core.rows import BASE_COLUMNS, content_id
from pipelines.sources import InputError, check_input, json_rows, read_source

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 6, 3), seed % 256, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _rec(image: str, caption: str, prompt: str = "<image>Describe the image.", **extra) -> dict:
    return {"images": [image], "messages": [{"role": "user", "content": prompt},
                                            {"role": "assistant", "content": caption}], **extra}


def _read(cfg: InputConfig, done: frozenset[str] = frozenset()) -> list[dict]:
    rows = read_source(cfg, done).take_all()
    for r in rows:
        assert set(BASE_COLUMNS) <= set(r), f"missing columns {set(BASE_COLUMNS) - set(r)}"
        counts = json.loads(r["counts"])
        assert counts["read"]["in"] == 1
        assert counts["read"]["rejected"] == (1 if r["reject_stage"] == "read" else 0)
    return sorted(rows, key=lambda r: _sid_key(r["source_id"]))


def _sid_key(sid: str) -> tuple[str, int | str]:
    name, _, idx = sid.rpartition("#")
    return (name, int(idx)) if idx.isdigit() else (name, idx)


def _by_sid(rows: list[dict]) -> dict[str, dict]:
    out = {r["source_id"]: r for r in rows}
    assert len(out) == len(rows), "a source_id came out twice"
    return out


# -- JSON -----------------------------------------------------------------------------------------


@pytest.fixture
def json_input(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(i))
    records = [
        _rec("img/0.png", "zero"),
        {"image": "img/1.png", "conversations": [{"from": "human", "value": "What? <image>"},
                                                 {"from": "gpt", "value": "one"}]},
        _rec("img/2.png", "two", id="my-own-id"),
        {"images": ["img/0.png"], "messages": []},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_json_reader(json_input, ray_local):
    rows = _by_sid(_read(InputConfig(path=str(json_input))))
    assert sorted(rows) == [f"data.json#{i}" for i in range(4)]
    r0, r1, r2, r3 = (rows[f"data.json#{i}"] for i in range(4))
    assert (r0["image_path"], r0["caption"], r0["user_prompt"], r0["image"]) == ("img/0.png", "zero", "Describe the image.", b"")
    assert r0["image_root"] == str(json_input.parent.resolve())
    assert r0["id"] == content_id("img/0.png", "Describe the image.", "zero")
    assert (r1["image_path"], r1["caption"], r1["user_prompt"]) == ("img/1.png", "one", "What?")
    assert r2["id"] == "my-own-id"
    assert (r3["reject_stage"], r3["reject_reason"]) == ("read", "malformed_record")
    assert "two turns" in r3["reject_detail"]
    assert all(not r["reject_stage"] for r in (r0, r1, r2))


def test_json_image_root_override_and_folder_of_files(tmp_path, ray_local):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "b.json").write_text(json.dumps([_rec("x.png", "b0"), _rec("y.png", "b1")]))
    (folder / "a.json").write_text(json.dumps([_rec("x.png", "a0")]))
    (folder / "notes.jsonl").write_text("ignored: a folder with .json files reads only those\n")
    rows = _read(InputConfig(path=str(folder), image_root=str(tmp_path)))
    assert [r["source_id"] for r in rows] == ["a.json#0", "b.json#0", "b.json#1"]
    assert [r["caption"] for r in rows] == ["a0", "b0", "b1"]
    assert {r["image_root"] for r in rows} == {str(tmp_path.resolve())}
    # json_rows (driver side) keeps the sorted file order exactly.
    assert [r["caption"] for r in json_rows(InputConfig(path=str(folder)))] == ["a0", "b0", "b1"]


def test_jsonl_with_an_undecodable_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_rec("a.png", "fine")) + "\n{not json\n\n" + json.dumps(_rec("b.png", "also")) + "\n")
    rows = json_rows(InputConfig(path=str(path)))
    assert [r["source_id"] for r in rows] == ["d.jsonl#0", "d.jsonl#1", "d.jsonl#2"]
    assert [r["reject_reason"] for r in rows] == ["", "malformed_record", ""]
    assert "undecodable JSON line" in rows[1]["reject_detail"]


def test_json_limit_and_resume_filter(json_input, ray_local):
    cfg = InputConfig(path=str(json_input), limit=3)
    full = _read(cfg)
    assert [r["source_id"] for r in full] == ["data.json#0", "data.json#1", "data.json#2"]
    done = frozenset({full[0]["id"], full[2]["id"]})
    rest = _read(cfg, done)
    assert [r["source_id"] for r in rest] == ["data.json#1"]


def test_ids_are_stable_across_reads(json_input, ray_local):
    a = [(r["source_id"], r["id"]) for r in _read(InputConfig(path=str(json_input)))]
    b = [(r["source_id"], r["id"]) for r in _read(InputConfig(path=str(json_input)))]
    assert a == b
    assert len({i for _, i in a}) == len(a)


# Arbitrary JSON values, plus records built from the real keys with arbitrary values (to reach deep paths).
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_turn = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "gpt", "x"]) | _json,
                                            "content": st.text(max_size=10) | _json,
                                            "from": st.sampled_from(["human", "gpt"]), "value": st.text(max_size=10)})
_record = st.fixed_dictionaries({}, optional={
    "images": st.lists(st.text(max_size=6) | _json, max_size=2) | _json,
    "image": st.text(max_size=6),
    "messages": st.lists(_turn, min_size=0, max_size=3) | _json,
    "conversations": st.lists(_turn, min_size=2, max_size=2),
    "id": st.text(max_size=4) | st.integers() | _json,
})
_records = st.lists(_record | _json, max_size=12)


def _check_every_record_once(rows: list[dict], n: int, name: str) -> None:
    assert sorted(r["source_id"] for r in rows) == sorted(f"{name}#{i}" for i in range(n))
    for r in rows:
        assert isinstance(r["id"], str) and r["id"]
        assert r["reject_stage"] in ("", "read")
        assert (r["reject_reason"] == "malformed_record") == (r["reject_stage"] == "read")
        if not r["reject_stage"]:
            assert isinstance(r["caption"], str) and r["image_path"]


@settings(max_examples=150, **SETTINGS)
@given(records=_records)
def test_fuzz_json_reader_driver_side(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("fz") / "f.json"
    path.write_text(json.dumps(records))
    rows = json_rows(InputConfig(path=str(path)))
    _check_every_record_once(rows, len(records), "f.json")
    assert [r["id"] for r in rows] == [r["id"] for r in json_rows(InputConfig(path=str(path)))]


@settings(max_examples=8, **SETTINGS)
@given(records=st.lists(_record | _json, min_size=1, max_size=6))
def test_fuzz_json_reader_through_ray(tmp_path_factory, ray_local, records):
    path = tmp_path_factory.mktemp("fzr") / "f.json"
    path.write_text(json.dumps(records))
    _check_every_record_once(_read(InputConfig(path=str(path))), len(records), "f.json")


@settings(max_examples=60, **SETTINGS)
@given(lines=st.lists(st.text(max_size=20) | _record.map(json.dumps), max_size=8))
def test_fuzz_jsonl_lines(tmp_path_factory, lines):
    lines = [ln.replace("\n", " ").replace("\r", " ") for ln in lines]
    path = tmp_path_factory.mktemp("fzl") / "f.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    n = sum(1 for ln in "\n".join(lines).splitlines() if ln.strip())
    _check_every_record_once(json_rows(InputConfig(path=str(path))), n, "f.jsonl")


# -- Parquet --------------------------------------------------------------------------------------


def test_parquet_image_struct_bytes_and_paths(tmp_path, ray_local):
    folder = tmp_path / "pq"
    (folder / "sub").mkdir(parents=True)
    hf_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    t1 = pa.table({
        "image": pa.array([{"bytes": _png(i), "path": f"orig{i}.png"} for i in range(5)]
                          + [{"bytes": None, "path": "rel/p.png"}], type=hf_struct),
        "caption": [f"c{i}" for i in range(5)] + ["by path"],
    })
    pq.write_table(t1, folder / "a.parquet", row_group_size=2)  # 3 row groups
    t2 = pa.table({"image": [_png(9), None, b"raw"], "caption": ["raw", "no image", None]})
    pq.write_table(t2, folder / "sub" / "b.parquet")
    rows = _by_sid(_read(InputConfig(path=str(folder))))
    assert sorted(rows, key=_sid_key) == [f"a.parquet#{i}" for i in range(6)] + [f"sub/b.parquet#{i}" for i in range(3)]
    assert rows["a.parquet#3"]["image"] == _png(3) and rows["a.parquet#3"]["image_path"] == ""
    assert rows["a.parquet#3"]["image_root"] == ""
    assert rows["a.parquet#3"]["id"] == content_id(_png(3), "", "c3")
    assert (rows["a.parquet#5"]["image"], rows["a.parquet#5"]["image_path"]) == (b"", "rel/p.png")
    assert rows["a.parquet#5"]["image_root"] == str(folder.resolve())
    assert rows["sub/b.parquet#0"]["image"] == _png(9)
    assert rows["sub/b.parquet#1"]["reject_reason"] == "malformed_record"
    assert "no bytes and no path" in rows["sub/b.parquet#1"]["reject_detail"]
    assert rows["sub/b.parquet#2"]["reject_reason"] == "malformed_record"
    assert "caption is NoneType" in rows["sub/b.parquet#2"]["reject_detail"]
    # Limit crosses row groups in input order; done ids are skipped after the limit.
    lim = _read(InputConfig(path=str(folder), limit=7))
    assert [r["source_id"] for r in lim] == [f"a.parquet#{i}" for i in range(6)] + ["sub/b.parquet#0"]
    rest = _read(InputConfig(path=str(folder), limit=7), frozenset(r["id"] for r in lim[:4]))
    assert [r["source_id"] for r in rest] == ["a.parquet#4", "a.parquet#5", "sub/b.parquet#0"]


def test_parquet_path_column_and_id_column(tmp_path, ray_local):
    pq.write_table(pa.table({"file": ["a.png", "b.png"], "text": ["A", "B"], "uid": ["u1", None]}), tmp_path / "x.parquet")
    cfg = InputConfig(path=str(tmp_path / "x.parquet"), image_column="file", caption_column="text", id_column="uid")
    assert check_input(cfg) == "parquet"
    rows = _read(cfg)
    assert [(r["image_path"], r["caption"], r["id"]) for r in rows] == [
        ("a.png", "A", "u1"), ("b.png", "B", content_id("b.png", "", "B"))]
    assert rows[0]["source_id"] == "x.parquet#0"


# -- datasets -------------------------------------------------------------------------------------


def test_datasets_save_to_disk(tmp_path, ray_local):
    import datasets

    feats = datasets.Features({"img": datasets.Image(), "text": datasets.Value("string"), "uid": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"img": [{"bytes": _png(i), "path": None} for i in range(4)], "text": ["a", "b", "c", "d"],
         "uid": ["k0", "k1", "k2", "k3"]}, features=feats)
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"), max_shard_size="1KB")
    cfg = InputConfig(path=str(tmp_path / "dd"), image_column="img", caption_column="text", id_column="uid")
    assert check_input(cfg) == "hf"
    rows = _read(cfg)
    assert [(r["source_id"], r["id"], r["caption"]) for r in rows] == [
        (f"train#{i}", f"k{i}", c) for i, c in enumerate("abcd")]
    assert rows[2]["image"] == _png(2)
    assert [r["source_id"] for r in _read(cfg.model_copy(update={"split": "test"}))] == ["test#0"]
    assert [r["id"] for r in _read(cfg.model_copy(update={"limit": 2}))] == ["k0", "k1"]
    ds.save_to_disk(str(tmp_path / "single"))
    rows = _read(InputConfig(path=str(tmp_path / "single"), image_column="img", caption_column="text"))
    assert [r["id"] for r in rows] == [content_id(_png(i), "", c) for i, c in enumerate("abcd")]


# -- WebDataset -----------------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path, ray_local):
    d = tmp_path / "wds"
    d.mkdir()
    _tar(d / "s0.tar", [
        ("a/000.jpg", _png(1)), ("a/000.txt", b"first"),
        ("a/001.png", _png(2)), ("a/001.json", json.dumps({"caption": "second", "id": "own"}).encode()),
        ("a/002.png", _png(3)),  # no caption
        ("a/003.png", _png(4)), ("a/003.jpg", _png(5)), ("a/003.txt", b"two images"),
        ("a/004.png", _png(6)), ("a/004.txt", b"\xff\xfe not utf-8"),
    ])
    _tar(d / "s1.tar", [("b.x.png", _png(7)), ("b.x.txt", b"dotted key")])
    rows = _by_sid(_read(InputConfig(path=str(d))))
    assert sorted(rows, key=_sid_key) == [f"s0.tar#a/00{i}" for i in range(5)] + ["s1.tar#b"]
    assert (rows["s0.tar#a/000"]["caption"], rows["s0.tar#a/000"]["image"]) == ("first", _png(1))
    assert (rows["s0.tar#a/001"]["caption"], rows["s0.tar#a/001"]["id"]) == ("second", "own")
    assert rows["s1.tar#b"]["caption"] == "dotted key"
    for sid, word in (("a/002", "no string caption"), ("a/003", "2 image members"), ("a/004", "not decodable")):
        assert rows[f"s0.tar#{sid}"]["reject_reason"] == "malformed_record"
        assert word in rows[f"s0.tar#{sid}"]["reject_detail"]
    lim = _read(InputConfig(path=str(d), limit=2))
    assert [r["source_id"] for r in lim] == ["s0.tar#a/000", "s0.tar#a/001"]


def test_webdataset_truncated_shard_keeps_earlier_samples_and_reports_the_break(tmp_path, ray_local):
    _tar(tmp_path / "t.tar", [("k0.png", _png(1)), ("k0.txt", b"kept"), ("k1.png", _png(2) * 200), ("k1.txt", b"lost")])
    data = (tmp_path / "t.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[:3000])  # cut inside k1.png (its data starts at byte 2560)
    rows = _read(InputConfig(path=str(tmp_path / "t.tar")))
    assert sorted(r["source_id"] for r in rows) == ["t.tar#<broken>", "t.tar#k0"]
    broken = next(r for r in rows if r["source_id"] == "t.tar#<broken>")
    assert (broken["reject_stage"], broken["reject_reason"]) == ("read", "unreadable_shard")
    assert next(r for r in rows if r["source_id"] == "t.tar#k0")["caption"] == "kept"


# -- check_input ----------------------------------------------------------------------------------


def _err(cfg: InputConfig) -> str:
    with pytest.raises(InputError) as e:
        check_input(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_check_input_one_line_errors(tmp_path):
    assert "not set" in _err(InputConfig())
    assert "does not exist" in _err(InputConfig(path=str(tmp_path / "nope.json")))
    (tmp_path / "bad.json").write_text("{oops")
    assert "bad.json is not valid JSON" in _err(InputConfig(path=str(tmp_path / "bad.json")))
    (tmp_path / "obj.json").write_text('{"a": 1}')
    assert "must hold a JSON list" in _err(InputConfig(path=str(tmp_path / "obj.json")))
    (tmp_path / "empty.json").write_text("[]")
    assert "no records" in _err(InputConfig(path=str(tmp_path / "empty.json")))
    (tmp_path / "meta.json").write_text(json.dumps([{"image": "x.png", "caption": "not a conversation"}] * 3))
    msg = _err(InputConfig(path=str(tmp_path / "meta.json")))
    assert "none of the first 3 records" in msg and "meta.json#0" in msg
    (tmp_path / "x.csv").write_text("a,b")
    assert "set input.format" in _err(InputConfig(path=str(tmp_path / "x.csv")))
    (tmp_path / "emptydir").mkdir()
    assert "emptydir" in _err(InputConfig(path=str(tmp_path / "emptydir")))
    assert "no .parquet files" in _err(InputConfig(path=str(tmp_path / "emptydir"), format="parquet"))
    assert "no .tar shards" in _err(InputConfig(path=str(tmp_path / "emptydir"), format="webdataset"))
    (tmp_path / "fake.tar").write_bytes(b"not a tar at all" * 100)
    assert "is not a tar file" in _err(InputConfig(path=str(tmp_path / "fake.tar")))
    (tmp_path / "fake.parquet").write_bytes(b"nope")
    assert "not a readable Parquet file" in _err(InputConfig(path=str(tmp_path / "fake.parquet")))
    assert "is not a folder" in _err(InputConfig(path=str(tmp_path / "empty.json"), image_root=str(tmp_path / "nodir")))


def test_check_input_columns_and_splits(tmp_path):
    import datasets

    pq.write_table(pa.table({"img": [b"x"], "text": ["t"]}), tmp_path / "a.parquet")
    msg = _err(InputConfig(path=str(tmp_path / "a.parquet")))
    assert "lacks column(s) ['image', 'caption']" in msg and "a.parquet" in msg
    pq.write_table(pa.table({"image": [1], "caption": ["t"]}), tmp_path / "b.parquet")
    assert "has type int64" in _err(InputConfig(path=str(tmp_path / "b.parquet")))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [b"x"], "caption": ["c"]})}).save_to_disk(
        str(tmp_path / "dd"))
    assert "no split 'validation'" in _err(InputConfig(path=str(tmp_path / "dd"), split="validation"))
    assert "lacks column(s) ['uid']" in _err(InputConfig(path=str(tmp_path / "dd"), id_column="uid"))
    assert check_input(InputConfig(path="org/name", format="hf")) == "hf"  # a hub id: checked when loaded


def test_check_input_detects_formats(tmp_path, json_input):
    assert check_input(InputConfig(path=str(json_input))) == "json"
    assert check_input(InputConfig(path=str(json_input.parent))) == "json"
    _tar(tmp_path / "w.tar", [("k.png", _png(0)), ("k.txt", b"c")])
    assert check_input(InputConfig(path=str(tmp_path / "w.tar"))) == "webdataset"


def test_everything_already_done_gives_an_empty_dataset(json_input, tmp_path, ray_local):
    cfg = InputConfig(path=str(json_input))
    done = frozenset(r["id"] for r in json_rows(cfg))
    assert read_source(cfg, done).take_all() == []
    pq.write_table(pa.table({"image": [b"x"], "caption": ["c"]}), tmp_path / "p.parquet")
    pcfg = InputConfig(path=str(tmp_path / "p.parquet"))
    (row,) = read_source(pcfg).take_all()
    assert read_source(pcfg, frozenset({row["id"]})).take_all() == []


@pytest.mark.parametrize("role", [[], {}, 3, None])
def test_non_string_role_is_a_malformed_record_not_a_crash(role):
    """Found by the fuzz test: an unhashable role used to raise TypeError instead of rejecting the record."""
    from pipelines.readers.json_reader import Malformed, parse_json_record

    rec = {"image": "0", "messages": [{"role": role, "content": "<image>hi"}, {"role": "assistant", "content": "x"}]}
    with pytest.raises(Malformed, match="roles"):
        parse_json_record(rec)
