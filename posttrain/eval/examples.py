"""Evaluation examples, load results and the small readers every benchmark loader shares."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

LOAD_STAGE = "eval_load"


@dataclass
class Example:
    """One benchmark item, normalized across layouts.

    `answer` is a string, except for `set` / `multilabel` items (a list of strings). For `choice`
    items it is the option letter ("B"); for `classification` the label text. `image` holds encoded
    bytes or a PIL image.
    """

    id: str
    image: bytes | Image.Image
    question: str
    answer: str | list[str]
    answer_type: str
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def ref(self) -> dict[str, Any]:
        """JSON-safe reference record (no image)."""
        d = asdict(self)
        d.pop("image")
        return d


@dataclass
class LoadResult:
    """What a loader read: usable examples, and a reject record for everything it could not use."""

    examples: list[Example] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)

    def reject(self, id_: str, reason: str, detail: str = "") -> None:
        self.rejects.append({"id": str(id_), "stage": LOAD_STAGE, "reason": reason, "detail": detail[:500]})

    def add(self, ex: Example) -> None:
        """Add an example, or reject it when its reference answer is empty (nothing to score against)."""
        empty = not ex.answer or (isinstance(ex.answer, str) and not ex.answer.strip())
        if empty:
            self.reject(ex.id, "empty_answer", ex.question)
        elif not ex.question.strip():
            self.reject(ex.id, "empty_question")
        else:
            self.examples.append(ex)

    def full(self, limit: int | None) -> bool:
        return limit is not None and len(self.examples) >= limit


def read_image_file(res: LoadResult, id_: str, root: Path, rel: str) -> bytes | None:
    """Bytes of `root/rel`, or None after recording a reject (missing file, path escaping root)."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        res.reject(id_, "path_escape", rel)
        return None
    if not path.is_file():
        res.reject(id_, "missing_image", str(rel))
        return None
    return path.read_bytes()


def image_bytes(value: Any) -> bytes | None:
    """Encoded bytes from an HF image cell: {"bytes", "path"} struct, raw bytes or a PIL image."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path") and Path(value["path"]).is_file():
            return Path(value["path"]).read_bytes()
        return None
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    return None


def to_pil(image: bytes | Image.Image) -> Image.Image:
    """RGB PIL image; raises (PIL.UnidentifiedImageError / OSError) on undecodable bytes."""
    img = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    img.load()
    return img.convert("RGB")


def iter_hf_rows(path: str | Path, split: str) -> Iterator[dict[str, Any]]:
    """Rows of an HF-style dataset: a Parquet file, a folder of Parquet shards (`<split>-*.parquet`
    preferred), a `save_to_disk` folder, or, when no such path exists, a hub id through `datasets`."""
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        files = [p]
    elif p.is_dir() and any((p / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        yield from _iter_datasets(_load_from_disk(p, split))
        return
    elif p.is_dir():
        every = sorted(p.rglob("*.parquet"))
        files = [f for f in every if f.name.startswith(f"{split}-") or f.name == f"{split}.parquet"] or every
        if not files:
            raise FileNotFoundError(f"no Parquet files under {p}")
    elif not p.exists() and str(path).count("/") == 1:
        import datasets

        yield from _iter_datasets(datasets.load_dataset(str(path), split=split))
        return
    else:
        raise FileNotFoundError(f"{path}: not a Parquet file, dataset folder or hub id")
    import pyarrow.parquet as pq

    for f in files:
        yield from pq.read_table(f).to_pylist()


def _load_from_disk(p: Path, split: str) -> Any:
    import datasets

    ds = datasets.load_from_disk(str(p))
    return ds[split] if isinstance(ds, datasets.DatasetDict) else ds


def _iter_datasets(ds: Any) -> Iterator[dict[str, Any]]:
    import datasets

    for name, feat in ds.features.items():
        if isinstance(feat, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    yield from ds


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def first_existing(root: Path, names: list[str]) -> Path | None:
    for n in names:
        if (root / n).exists():
            return root / n
    return None
