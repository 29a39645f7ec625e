"""Ingest: every bad input case ends with its exact reason, good images come out as RGB PNG, nothing is lost."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from pipelines.config import InputConfig, RunConfig
from pipelines.pipeline import stage_calls
from pipelines.ingest import IngestStage, caption_problem
from pipelines.core.rows import batch_to_rows, empty_row, reject, rows_to_batch
from pipelines.sources import json_rows, read_source
from pipelines.core.stage import MissingColumnsError
from tests.badinputs import REASON_STAGE, at_ingest, mode_images, write_bad_json_input


def _png(color=(10, 20, 30), size=(6, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _ingest(cfg: RunConfig, rows: list[dict]) -> list[dict]:
    """The stage as `pipelines.pipeline.stage_calls` builds it (the config's image root as fallback)."""
    (call,) = [c for c in stage_calls(cfg) if c.cls is IngestStage]
    return batch_to_rows(IngestStage(**call.kwargs)(rows_to_batch(rows)))


def _assert_outcomes(rows: list[dict], expected: dict[str, str]) -> None:
    got = {r["source_id"]: (r["reject_reason"] or "accepted") for r in rows}
    assert len(got) == len(rows), "a record came out twice"
    assert len(rows) == len(expected), "a record was lost"
    assert got == expected
    for r in rows:
        if r["reject_reason"]:
            assert r["reject_stage"] == REASON_STAGE[r["reject_reason"]] and r["reject_detail"]
    n_acc = sum(1 for r in rows if not r["reject_stage"])
    assert n_acc + sum(1 for r in rows if r["reject_stage"]) == len(expected)


def _check_accepted_image(r: dict) -> None:
    img = Image.open(io.BytesIO(r["image"]))
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == (r["width"], r["height"]) and r["width"] > 0


def test_bad_inputs_through_ray(tmp_path, ray_local):
    """The whole bad input via read_source + the stage as the pipeline maps it."""
    path, expected = write_bad_json_input(tmp_path)
    cfg = RunConfig(input=InputConfig(path=str(path)))
    ds = read_source(cfg.input).map_batches(
        IngestStage, fn_constructor_kwargs={"cfg": cfg.input}, batch_format="numpy", **IngestStage.ray_options()
    )
    rows = ds.take_all()
    _assert_outcomes(rows, at_ingest(expected))
    totals: Counter = Counter()
    for r in rows:
        for stage, c in json.loads(r["counts"]).items():
            assert c["in"] == c["out"] + c["rejected"]
            totals.update({f"{stage}.{k}": v for k, v in c.items()})
    assert totals["read.in"] == len(expected)
    assert totals["ingest.in"] == totals["read.out"]  # every row that left read went through ingest
    assert totals["ingest.rejected"] == sum(1 for v in expected.values() if REASON_STAGE.get(v) == "ingest")
    for r in rows:
        if not r["reject_stage"]:
            _check_accepted_image(r)
    # The duplicate pair shares its id (the sink, not ingest, rejects the second).
    dup = [sid for sid, v in expected.items() if v == "duplicate_id"][0]
    by_sid = {r["source_id"]: r for r in rows}
    assert sum(1 for r in rows if r["id"] == by_sid[dup]["id"]) == 2


def test_bad_inputs_direct_call_and_converted_modes(tmp_path):
    path, expected = write_bad_json_input(tmp_path)
    cfg = RunConfig(input=InputConfig(path=str(path)))
    rows = _ingest(cfg, json_rows(cfg.input))
    _assert_outcomes(rows, at_ingest(expected))
    converted = {r["image_path"].rsplit("/", 1)[-1]: r for r in rows if not r["reject_stage"]}
    assert set(mode_images()) <= set(converted), "CMYK/16-bit/palette/alpha/grayscale images must be accepted"
    for r in converted.values():
        _check_accepted_image(r)
    # Accepted captions lose their stray <image> tag.
    assert converted["good.jpg"]["caption"] == "A  JPEG photo."


def test_caption_rules():
    assert caption_problem("", 1)[0] == "empty_caption"
    assert caption_problem(" \n\t", 1)[0] == "empty_caption"
    assert caption_problem("<image>", 1)[0] == "caption_only_image_tag"
    assert caption_problem(" <image> <image>\n", 1)[0] == "caption_only_image_tag"
    assert caption_problem("ab c", 4)[0] == "short_caption"  # 3 non-space characters
    assert caption_problem("<image>abcd", 4) is None
    assert caption_problem("x", 1) is None


def test_embedded_bytes_min_chars_and_passthrough():
    cfg = RunConfig(input=InputConfig(min_caption_chars=5))
    done = reject(empty_row(id="r", caption="fine caption", image=b"junk"), "read", "malformed_record", "x")
    done["counts"] = json.dumps({"read": {"in": 1, "out": 0, "rejected": 1}})
    rows = _ingest(cfg, [
        empty_row(id="a", image=_png(), caption="<image> a good caption "),
        empty_row(id="b", image=_png(), caption="tiny"),
        empty_row(id="c", caption="no image at all"),
        empty_row(id="d", image=b"\x89PNG\r\n\x1a\n" + b"\0" * 30, caption="broken bytes"),
        done,
    ])
    a, b, c, d, r = rows
    assert (a["reject_reason"], a["caption"], a["width"], a["height"]) == ("", "a good caption", 6, 4)
    assert np.asarray(Image.open(io.BytesIO(a["image"])))[0, 0].tolist() == [10, 20, 30]
    assert b["reject_reason"] == "short_caption"
    assert c["reject_reason"] == "missing_image"
    assert d["reject_reason"] == "unreadable_image"
    # An already-rejected row passes untouched and is not tallied by ingest.
    assert (r["reject_stage"], r["image"], r["width"]) == ("read", b"junk", 0)
    assert "ingest" not in json.loads(r["counts"])
    assert json.loads(a["counts"]) == {"ingest": {"in": 1, "out": 1, "rejected": 0}}
    assert json.loads(b["counts"]) == {"ingest": {"in": 1, "out": 0, "rejected": 1}}


def test_path_rows_and_limits(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.png").write_bytes(_png(size=(20, 10)))
    (tmp_path / "img" / "big.bin").write_bytes(np.random.default_rng(0).bytes((1 << 20) + 2000))
    (tmp_path / "img" / "adir.png").mkdir()
    cfg = RunConfig(input=InputConfig(max_image_pixels=199))
    root = str(tmp_path)
    rows = _ingest(cfg, [
        empty_row(id="1", image_path="img/ok.png", image_root=root, caption="c"),
        empty_row(id="2", image_path="img/big.bin", image_root=root, caption="c"),
        empty_row(id="3", image_path="img/adir.png", image_root=root, caption="c"),
        empty_row(id="4", image_path="img/ok.png", image_root="", caption="c"),  # no root anywhere
    ])
    assert [r["reject_reason"] for r in rows] == ["too_many_pixels", "file_too_large", "unreadable_image", "missing_image"]
    # Without image_root on the row, ingest falls back to the config's root.
    cfg2 = RunConfig(input=InputConfig(path=str(tmp_path / "data.json"), image_root=root))
    (row,) = _ingest(cfg2, [empty_row(id="5", image_path="img/ok.png", caption="c")])
    assert (row["reject_reason"], row["width"], row["height"]) == ("", 20, 10)


def test_missing_columns_fail_loudly():
    with pytest.raises(MissingColumnsError, match="image_path"):
        IngestStage(InputConfig())({"image": np.array([b""], dtype=object), "caption": np.array(["c"], dtype=object)})


def test_ray_options_are_map_batches_kwargs():
    import ray.data

    opts = IngestStage.ray_options(num_cpus=2)
    assert isinstance(opts["compute"], ray.data.ActorPoolStrategy)
    assert opts["batch_size"] >= 1 and 0 < opts["num_cpus"] <= 1
    assert "fn_constructor_kwargs" not in opts  # the pipeline passes the config itself
