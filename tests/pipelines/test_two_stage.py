"""A two-stage dataset written by the pipeline's own stages and sink trains stage 1 before stage 2.

Reference: AdaMLLM (arXiv 2411.19930), the two-stage baseline of its ablation: the caption task is trained
first, the synthetic tasks after it. The split travels as a column of the output contract
(`pipelines.core.contract.DATASET_FEATURES`), which the trainer orders by.
"""

from __future__ import annotations

import copy
import io
import json

import pyarrow.parquet as pq
from PIL import Image

from filters.compose import ComposeStage
from filters.config import ComposeConfig, MixConfig
from filters.mix import MixStage
from pipelines.core.rows import batch_to_rows, empty_row, rows_to_batch
from pipelines.manifest import Manifest
from pipelines.sinks import DatasetSink
from posttrain.config import TrainConfig
from posttrain.sft import SFTRecipe

COLORS = ["red", "blue", "green", "white", "black", "yellow", "gray", "pink"]


def _png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def _judged_row(i: int) -> dict:
    c = COLORS[i % len(COLORS)]
    tasks = [{"instruction": "What color is the tissue?", "precise": c, "informative": f"The tissue is {c}.",
              "label": "yes", "score": 0.9}]
    return empty_row(id=f"img{i}", source_id=f"in.json#{i}", image=_png(c), caption=f"A {c} tissue sample.",
                     tasks=json.dumps(tasks))


def write_two_stage_dataset(out, n: int = 8) -> Manifest:
    """Compose -> mix(two_stage) -> sink, as `pipelines.pipeline.stage_calls` wires them (no Ray needed)."""
    rows = [_judged_row(i) for i in range(n)]
    batch = ComposeStage(ComposeConfig(mode="combined"))(rows_to_batch(rows))
    batch = MixStage(MixConfig(strategy="two_stage", caption_position="first"))(batch)
    manifest = Manifest.open(out, "h", {"domain": "biomed"}, resume=False)
    sink = DatasetSink(out, manifest, domain="biomed", rows_per_shard=3)
    sink.add_batch(rows_to_batch(batch_to_rows(batch)))
    sink.close()
    return manifest


def test_sink_writes_the_split_column(tmp_path):
    m = write_two_stage_dataset(tmp_path)
    table = pq.read_table(m.committed_parts("data"))
    rows = table.select(["id", "split", "task_kind"]).to_pylist()
    assert sorted({r["split"] for r in rows}) == ["stage1", "stage2"]
    assert all((r["split"] == "stage1") == (r["task_kind"] == "caption") for r in rows)
    assert len(rows) == 16  # one caption record and one synthetic record per image


def test_pipeline_two_stage_output_trains_stage1_before_stage2(tmp_path, tiny_vlm_path):
    m = write_two_stage_dataset(tmp_path / "out")
    files = [str(p) for p in m.committed_parts("data")]
    cfg = TrainConfig(model=tiny_vlm_path, batch_size=3, learning_rate=1e-4, warmup_ratio=0.0, max_length=256,
                      use_gpu=False, save_every_steps=1000, seed=0, epochs=1.0)
    recipe = SFTRecipe(cfg, files, tmp_path / "model")
    recipe.setup()
    try:
        splits = pq.read_table(files, columns=["split"]).column("split").to_pylist()
        sampler = copy.deepcopy(recipe.sampler)  # the order training will draw, without advancing the real one
        sampler.set_epoch(sampler.epoch)
        order = [recipe.dataset.index[pos] for b in sampler for pos in b]
        seen = [splits[i] for i in order]
        assert sorted(seen) == sorted(splits)  # every row once
        first_stage2 = seen.index("stage2")
        assert set(seen[:first_stage2]) == {"stage1"} and set(seen[first_stage2:]) == {"stage2"}
        recipe.train()
        ids = pq.read_table(files, columns=["id"]).column("id").to_pylist()
        assert recipe.seen_ids == [ids[i] for i in order]  # training consumed exactly that order
    finally:
        recipe.cleanup()
