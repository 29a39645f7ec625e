"""Property-based fuzz tests of the Parquet and WebDataset readers, like the JSON reader's in test_sources.py.

Random records, broken members and wrong types go through read -> ingest -> sink, and every input record
must end up in OUT/data or OUT/rejects, never both, never neither (matched by `source_id`).

What counts as a record comes from the formats, re-implemented here rather than taken from the reader:
- Parquet: one record per row; the file footer says how many rows each row group holds.
- WebDataset (github.com/webdataset/webdataset, `tariterators.group_by_keys` / `base_plus_ext`): a sample is
  a run of consecutive file members sharing a key, the key being the member path up to the first '.' of
  its base name; directories are not members. A key that comes back after another key is a new sample.
"""

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

from pipelines.config import InputConfig, RunConfig
from pipelines.ingest import IngestStage
from pipelines.manifest import Manifest
from pipelines.readers.arrow_reader import plan_parquet, table_rows
from pipelines.readers.webdataset_reader import plan_tars, tar_rows
from pipelines.core.rows import rows_to_batch
from pipelines.sinks import DatasetSink
from pipelines.sources import check_input, image_root, read_source

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _png(seed: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 5, 3), seed * 40 % 256, dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


PNGS = [_png(i) for i in range(3)] + [_png(7, "JPEG")]
_image_bytes = st.sampled_from(PNGS) | st.binary(max_size=24) | st.just(PNGS[0][:30])  # good, junk, truncated
# Captions with the cases ingest must catch: empty, blank, controls and invisible Unicode only, real text.
_caption = st.text(max_size=12) | st.sampled_from(["", " ", "\x00\x00", "\u200b\ufeff", "<image>", "A cell."])


def _outcome(rows: list[dict], out: Path) -> tuple[list[str], list[str]]:
    """Run ingest and the sink over read rows; source_ids found in OUT/data and in OUT/rejects."""
    cfg = RunConfig(domain="fuzz")
    batch = IngestStage(cfg.input)(rows_to_batch(rows)) if rows else None
    m = Manifest.open(out, cfg.hash(), cfg.model_dump(mode="json"), resume=False)
    sink = DatasetSink(out, m, domain="fuzz", rows_per_shard=7)
    if batch is not None:
        sink.add_batch(batch)
    sink.close()
    assert not m.check_balanced()

    def sids(kind: str) -> list[str]:
        parts = m.committed_parts(kind)
        return [s for p in parts for s in pq.read_table(p, columns=["source_id"])["source_id"].to_pylist()]

    return sids("data"), sids("rejects")


def _check_once(expected: list[str], data: list[str], rejects: list[str]) -> None:
    """Every expected record in data or rejects, never both, never neither, never twice, nothing else."""
    assert len(set(data)) == len(data), "a record is in the dataset twice"
    assert len(set(rejects)) == len(rejects), "a record is in rejects twice"
    assert not set(data) & set(rejects), f"in both: {set(data) & set(rejects)}"
    assert sorted(data + rejects) == sorted(expected)


# -- Parquet --------------------------------------------------------------------------------------

_IMAGE_TYPES = {
    "binary": pa.binary(), "large_binary": pa.large_binary(), "string": pa.string(),
    "struct": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
}
# Caption columns of the wrong type are allowed by the input check and must reject each record.
_CAPTION_TYPES = {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(),
                  "binary": pa.binary(), "list": pa.list_(pa.string())}
_PATHS = ["img0.png", "bad.png", "missing.png", "../outside.png", "/etc/passwd", "", "sub"]


@st.composite
def _parquet_input(draw):
    image_type = draw(st.sampled_from(sorted(_IMAGE_TYPES)))
    caption_type = draw(st.sampled_from(sorted(_CAPTION_TYPES)))
    path = st.sampled_from(_PATHS)
    image = {
        "binary": _image_bytes, "large_binary": _image_bytes, "string": path,
        "struct": st.fixed_dictionaries({"bytes": st.none() | _image_bytes, "path": st.none() | path}),
    }[image_type]
    caption = {"string": _caption, "large_string": _caption, "int64": st.integers(-5, 5),
               "binary": st.binary(max_size=6), "list": st.lists(_caption, max_size=2)}[caption_type]
    n = draw(st.integers(1, 9))
    table = {
        "image": pa.array(draw(st.lists(st.none() | image, min_size=n, max_size=n)), type=_IMAGE_TYPES[image_type]),
        "caption": pa.array(draw(st.lists(st.none() | caption, min_size=n, max_size=n)),
                            type=_CAPTION_TYPES[caption_type]),
    }
    with_ids = draw(st.booleans())
    if with_ids:  # own ids, with collisions and nulls: duplicates must go to rejects as duplicate_id
        table["uid"] = pa.array(draw(st.lists(st.none() | st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)))
    row_group_size = draw(st.integers(1, 4))
    corrupt = draw(st.none() | st.integers(0, 10))  # which row group's data pages to garble, if any
    return pa.table(table), with_ids, row_group_size, corrupt


def _write_parquet(folder: Path, table: pa.Table, row_group_size: int, corrupt: int | None) -> Path:
    (folder / "img0.png").write_bytes(PNGS[0])
    (folder / "bad.png").write_bytes(b"not an image")
    (folder / "sub").mkdir(exist_ok=True)
    path = folder / "f.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    md = pq.ParquetFile(path).metadata
    if corrupt is not None:  # garble one row group's column chunks (the footer stays readable)
        rg = md.row_group(corrupt % md.num_row_groups)
        data = bytearray(path.read_bytes())
        for c in range(rg.num_columns):
            col = rg.column(c)
            start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
            for k in range(start + 1, start + col.total_compressed_size - 1):
                data[k] ^= 0xA5
        path.write_bytes(bytes(data))
    return path


@settings(max_examples=60, **SETTINGS)
@given(case=_parquet_input())
def test_fuzz_parquet_every_record_once_in_data_or_rejects(tmp_path_factory, case):
    table, with_ids, row_group_size, corrupt = case
    folder = tmp_path_factory.mktemp("pq")
    path = _write_parquet(folder, table, row_group_size, corrupt)
    cfg = InputConfig(path=str(path), id_column="uid" if with_ids else None)
    assert check_input(cfg) == "parquet"  # the footer is intact: the input as a whole is readable
    rows = [r for it in plan_parquet(path) for r in table_rows(it, cfg, "parquet", image_root(cfg))]
    data, rejects = _outcome(rows, folder / "out")
    _check_once([f"f.parquet#{i}" for i in range(table.num_rows)], data, rejects)
    if corrupt is None:
        assert all(r["reject_reason"] != "unreadable_shard" for r in rows)


@settings(max_examples=5, **SETTINGS)
@given(case=_parquet_input())
def test_fuzz_parquet_through_ray(tmp_path_factory, ray_local, case):
    table, with_ids, row_group_size, corrupt = case
    folder = tmp_path_factory.mktemp("pqr")
    path = _write_parquet(folder, table, row_group_size, corrupt)
    rows = read_source(InputConfig(path=str(path), id_column="uid" if with_ids else None)).take_all()
    assert sorted(r["source_id"] for r in rows) == sorted(f"f.parquet#{i}" for i in range(table.num_rows))


# -- WebDataset -----------------------------------------------------------------------------------

_key = st.sampled_from(["a", "b", "c", "d/e", "x.y"])  # few keys: they repeat, also non-adjacently
_ext = st.sampled_from(["png", "jpg", "txt", "json", "cls", "seg.png", ""])
_json_meta = st.one_of(
    st.fixed_dictionaries({}, optional={"caption": _caption | st.integers() | st.none() | st.lists(st.integers()),
                                        "text": _caption, "id": st.text(max_size=3) | st.integers() | st.booleans()}),
    st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
)


@st.composite
def _member(draw):
    key, ext = draw(_key), draw(_ext)
    if ext.endswith(("png", "jpg")):
        data = draw(_image_bytes)
    elif ext == "txt":
        data = draw(_caption.map(lambda s: s.encode("utf-8")) | st.binary(max_size=8))  # invalid UTF-8 too
    elif ext == "json":
        data = draw(_json_meta.map(lambda v: json.dumps(v).encode()) | st.just(b"{broken"))
    else:
        data = draw(st.binary(max_size=6))
    name = f"{key}.{ext}" if ext else key
    return name, data, draw(st.integers(0, 9)) == 0  # rarely: a directory entry before the member


def _write_tar(path: Path, members: list[tuple[str, bytes, bool]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data, with_dir in members:
            if with_dir:
                d = tarfile.TarInfo("somedir")
                d.type = tarfile.DIRTYPE
                tf.addfile(d)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _samples(members: list[tuple[str, bytes, bool]]) -> list[str]:
    """Sample keys in tar order (WebDataset grouping: consecutive members with the same key)."""
    keys: list[str] = []
    for name, _, _ in members:
        head, _, base = name.rpartition("/")
        key = (head + "/" if head else "") + base.split(".", 1)[0]
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def _expected_sids(label: str, keys: list[str]) -> list[str]:
    """One source id per sample: `<tar>#<key>`, and `~<n>` for the n-th repeat of a key in that tar."""
    seen: dict[str, int] = {}
    out = []
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
        out.append(f"{label}#{k}" + (f"~{seen[k]}" if seen[k] > 1 else ""))
    return out


@settings(max_examples=80, **SETTINGS)
@given(members=st.lists(_member(), min_size=1, max_size=10))
def test_fuzz_webdataset_every_sample_once_in_data_or_rejects(tmp_path_factory, members):
    folder = tmp_path_factory.mktemp("wds")
    _write_tar(folder / "s.tar", members)
    cfg = InputConfig(path=str(folder / "s.tar"))
    assert check_input(cfg) == "webdataset"
    rows = [r for it in plan_tars(folder / "s.tar", limited=False) for r in tar_rows(it, cfg)]
    expected = _expected_sids("s.tar", _samples(members))
    assert [r["source_id"] for r in rows] == expected  # tar order, one row per sample
    for r in rows:
        assert r["reject_reason"] in ("", "malformed_record")
    data, rejects = _outcome(rows, folder / "out")
    _check_once(expected, data, rejects)
    # With a limit, the reader counts samples the same way (input.limit is a prefix of the samples).
    n = max(1, len(expected) // 2)
    (item,) = plan_tars(folder / "s.tar", limited=True)
    assert item["count"] == len(expected)
    limited = list(tar_rows(dict(item, count=n), cfg))
    assert [r["source_id"] for r in limited] == expected[:n]


@settings(max_examples=60, **SETTINGS)
@given(members=st.lists(_member(), min_size=1, max_size=6), cut=st.floats(0.05, 0.999))
def test_fuzz_webdataset_broken_tar(tmp_path_factory, members, cut):
    folder = tmp_path_factory.mktemp("wdsb")
    _write_tar(folder / "s.tar", members)
    with tarfile.open(folder / "s.tar") as tf:
        layout = [(m.offset, m.offset_data, m.size) for m in tf.getmembers() if m.isfile()]
    data = (folder / "s.tar").read_bytes()
    at = max(1, int(len(data) * cut))
    (folder / "s.tar").write_bytes(data[:at])
    cfg = InputConfig(path=str(folder / "s.tar"))
    try:
        check_input(cfg)
    except ValueError as e:  # cut inside the first header: not a tar at all, refused as a whole input
        assert "is not a tar file" in str(e) and at < layout[0][1]
        return
    rows = [r for it in plan_tars(folder / "s.tar", limited=False) for r in tar_rows(it, cfg)]
    sids = [r["source_id"] for r in rows]
    samples = [s for s in sids if not s.endswith("#<broken>")]
    assert samples == _expected_sids("s.tar", _samples(members))[: len(samples)]  # a prefix, in order
    # A cut through a member's header or data never passes silently: the break is a reject of its own.
    cut_inside = any(off < at < data_at + size for off, data_at, size in layout)
    if cut_inside:
        assert sids[-1] == "s.tar#<broken>"
        assert rows[-1]["reject_reason"] == "unreadable_shard"
    out_data, rejects = _outcome(rows, folder / "out")
    _check_once(sids, out_data, rejects)


@settings(max_examples=5, **SETTINGS)
@given(members=st.lists(_member(), min_size=1, max_size=8))
def test_fuzz_webdataset_through_ray(tmp_path_factory, ray_local, members):
    folder = tmp_path_factory.mktemp("wdsr")
    _write_tar(folder / "s.tar", members)
    rows = read_source(InputConfig(path=str(folder / "s.tar"))).take_all()
    assert sorted(r["source_id"] for r in rows) == sorted(_expected_sids("s.tar", _samples(members)))


def test_repeated_key_is_a_new_sample_with_its_own_source_id(tmp_path):
    """Found by the fuzz test: a key coming back after another key gave two rows the same source_id."""
    members = [("a.png", PNGS[0], False), ("a.txt", b"first a", False), ("b.png", PNGS[1], False),
               ("b.txt", b"b", False), ("a.png", PNGS[2], False), ("a.txt", b"second a", False)]
    _write_tar(tmp_path / "s.tar", members)
    rows = list(tar_rows(plan_tars(tmp_path / "s.tar", limited=False)[0], InputConfig(path=str(tmp_path))))
    assert [(r["source_id"], r["caption"]) for r in rows] == [
        ("s.tar#a", "first a"), ("s.tar#b", "b"), ("s.tar#a~2", "second a")]


@pytest.mark.parametrize("fmt", ["parquet"])
def test_corrupt_row_group_rejects_its_records_and_keeps_the_others(tmp_path, fmt):
    """Found by the fuzz test: a row group with garbled pages (readable footer) raised OSError in the reader."""
    table = pa.table({"image": [PNGS[i % 3] for i in range(6)], "caption": [f"caption {i}" for i in range(6)]})
    path = _write_parquet(tmp_path, table, row_group_size=2, corrupt=1)
    cfg = InputConfig(path=str(path))
    rows = [r for it in plan_parquet(path) for r in table_rows(it, cfg, fmt, image_root(cfg))]
    assert [(r["source_id"], r["reject_reason"]) for r in rows] == [
        ("f.parquet#0", ""), ("f.parquet#1", ""), ("f.parquet#2", "unreadable_shard"),
        ("f.parquet#3", "unreadable_shard"), ("f.parquet#4", ""), ("f.parquet#5", "")]
    assert "row group 1 cannot be decoded" in rows[2]["reject_detail"]
