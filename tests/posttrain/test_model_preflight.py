"""Bad model input fails before any training step, with one line naming the model and what is missing."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from posttrain.config import TrainConfig
from pipelines.core.contract import messages, write_dataset
from posttrain.preflight import ModelInputError
from tests.family_matrix import cell


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("preflight")
    write_dataset(str(d / "part-0.parquet"), [{"id": f"e{i}", "images": [Image.new("RGB", (32, 32))],
                                               "messages": messages([("Color?", "red")])} for i in range(2)])
    return d


def copy_of(ref: str, tmp_path) -> str:
    from pipelines.refs import resolve_model

    dst = tmp_path / ref.split("://")[1]
    shutil.copytree(resolve_model(ref), dst)
    return str(dst)


def fails_early(model: str, data_dir, tmp_path, match: str, method: str = "sft", **kw) -> str:
    from posttrain.train import train

    from pipelines.refs import resolve_model

    model = resolve_model(model)  # references are resolved at the edge; the recipe sees a path
    cfg = TrainConfig(model=model, method=method, use_gpu=False, batch_size=2,
                      vitask={"tsm": resolve_model("tiny://tsm")}, **kw)
    with pytest.raises(ModelInputError, match=match) as err:
        train(cfg, data_dir, tmp_path / "out")
    msg = str(err.value)
    assert "\n" not in msg and model in msg
    assert not (tmp_path / "out" / "metrics.jsonl").exists() or (tmp_path / "out" / "metrics.jsonl").read_text() == ""
    return msg


def test_text_only_architecture_is_refused(data_dir, tmp_path):
    fails_early("tiny://judge", data_dir, tmp_path, "LlamaForCausalLM .* not an image-text-to-text model")


def test_unknown_model_type_is_refused(data_dir, tmp_path):
    path = copy_of("tiny://vlm", tmp_path)
    cfg = json.loads((tmp_path / "vlm" / "config.json").read_text())
    cfg["model_type"] = "frobnicator_vl"
    (tmp_path / "vlm" / "config.json").write_text(json.dumps(cfg))
    fails_early(path, data_dir, tmp_path, "unknown architecture")


@pytest.mark.parametrize("method", ["sft", "vitask"])
def test_model_without_chat_template_is_refused(data_dir, tmp_path, method):
    path = copy_of("tiny://qwen2-vl", tmp_path)
    (tmp_path / "qwen2-vl" / "chat_template.jinja").unlink()
    tok_cfg = json.loads((tmp_path / "qwen2-vl" / "tokenizer_config.json").read_text())
    tok_cfg.pop("chat_template", None)
    (tmp_path / "qwen2-vl" / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    fails_early(path, data_dir, tmp_path, "no chat template", method=method)


def test_template_that_does_not_emit_the_processors_image_token_is_refused(data_dir, tmp_path):
    """llava-hf's llama3-llava-next template spells the image '<image>'; AdaMLLM's LLaVA-NeXT-Llama3 processors
    expand '<|reserved_special_token_4|>'. Pairing the two would train on images that never reach the model."""
    path = copy_of("tiny://llava-next", tmp_path)
    f = tmp_path / "llava-next" / "chat_template.jinja"
    f.write_text(f.read_text().replace("<|reserved_special_token_4|>", "<image>"))
    fails_early(path, data_dir, tmp_path, r"does not emit the processor's image token '<\|reserved_special_token_4\|>'")


def test_sequence_limit_that_cuts_image_tokens_is_refused(data_dir, tmp_path):
    msg = fails_early("tiny://llava-next", data_dir, tmp_path, "max_length 24 would cut image tokens", max_length=24)
    with cell("llava-next", "preflight", "test_model_preflight") as rec:
        rec["detail"] = msg


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "mllama", "vlm"])
def test_every_family_passes_preflight_and_refuses_a_short_limit(family, data_dir, tmp_path):
    from pipelines.refs import resolve_model
    from posttrain.preflight import checked_processor

    with cell(family, "preflight", "test_model_preflight"):
        assert checked_processor(resolve_model(f"tiny://{family}"), f"tiny://{family}", 512) is not None
        fails_early(f"tiny://{family}", data_dir, tmp_path, "would cut image tokens", max_length=16)
