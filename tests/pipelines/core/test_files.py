"""Atomic writes (`pipelines.core.files`): whole file or nothing, and the umask's mode, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from pipelines.core.files import atomic_write_bytes


def test_atomic_write_replaces_the_file_with_the_umask_mode(tmp_path):
    path = tmp_path / "sub" / "manifest.json"
    old = os.umask(0o027)
    try:
        atomic_write_bytes(path, b"one")
        atomic_write_bytes(path, b"two")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "card.md"
    atomic_write_bytes(path, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]
