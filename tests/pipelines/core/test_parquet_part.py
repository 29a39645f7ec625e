"""`ParquetPart`: a dataset part written a row group at a time, renamed into place only on commit."""

from __future__ import annotations

import os
import stat

import pyarrow.parquet as pq
import pytest

from pipelines.core import contract
from pipelines.core.contract import DATASET_SCHEMA, ParquetPart, dataset_row, write_rows


def row(i: int, image: bytes = b"\x89PNG fake") -> dict:
    return dataset_row(id=f"r{i}", images=[image], messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])


def test_row_groups_are_bounded_by_rows_and_by_image_bytes(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "a.parquet", [row(i) for i in range(250)], DATASET_SCHEMA)
    md = pq.ParquetFile(path).metadata
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [100, 100, 50]
    monkeypatch.setattr(contract, "ROW_GROUP_BYTES", 10_000)
    path = write_rows(tmp_path / "b.parquet", [row(i, bytes(3_000)) for i in range(10)], DATASET_SCHEMA)
    md = pq.ParquetFile(path).metadata
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [3, 3, 3, 1]  # 3 x (3,000 + 512) >= 10,000
    assert pq.read_table(path).column("id").to_pylist() == [f"r{i}" for i in range(10)]


def test_images_are_never_dictionary_encoded_and_text_is(tmp_path):
    md = pq.ParquetFile(write_rows(tmp_path / "a.parquet", [row(i) for i in range(5)], DATASET_SCHEMA)).metadata
    enc = {md.row_group(0).column(c).path_in_schema: md.row_group(0).column(c).encodings
           for c in range(md.row_group(0).num_columns)}
    assert not any("DICTIONARY" in e for e in enc["images.list.element.bytes"])
    assert any("DICTIONARY" in e for e in enc["messages.list.element.role"])


def test_nothing_is_visible_before_commit_and_discard_leaves_nothing(tmp_path):
    part = ParquetPart(tmp_path / "p.parquet", DATASET_SCHEMA)
    for i in range(150):
        part.add(row(i))
    assert not (tmp_path / "p.parquet").exists()
    assert [p.name.startswith(".p.parquet.") for p in tmp_path.iterdir()] == [True]  # the orphan sweep's kind
    part.discard()
    assert list(tmp_path.iterdir()) == []


def test_commit_gives_the_part_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_rows(tmp_path / "p.parquet", [row(0)], DATASET_SCHEMA)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_removes_its_temp_file(tmp_path):
    with pytest.raises(Exception):
        write_rows(tmp_path / "p.parquet", [row(0), {"id": 1}], DATASET_SCHEMA)  # a row of the wrong shape
    assert list(tmp_path.iterdir()) == []
