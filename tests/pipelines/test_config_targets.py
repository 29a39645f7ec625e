"""Published training settings per target model (pipelines/configs/targets/), checked against the reference
commands in bigai-ai/QA-Synthesizer: docs/Post_Train.md (Qwen2-VL-2B and Llama-3.2-11B-Vision via LLaMA-Factory)
and scripts/post_train_mllm.sh, scripts/tune_synthesizer.sh (LLaVA-v1.6-Llama3-8B). The reference runs on 8 GPUs,
so its global batch is per_device_train_batch_size x gradient_accumulation_steps x 8.
"""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError, load_config

# (target, per-device batch, grad accumulation, lr, weight decay, warm-up ratio, epochs, vision lr, vision frozen)
REFERENCE = {
    "qwen2_vl_2b": (8, 2, 1e-5, 0.1, 0.1, 1, None, True),
    "llama32_11b_vision": (4, 4, 1e-5, 0.1, 0.1, 1, None, True),
    "llava_next_llama3_8b": (4, 4, 2e-5, 0.0, 0.03, 1, 2e-6, False),
    "synthesizer_llava_next_llama3_8b": (4, 4, 2e-5, 0.0, 0.03, 2, 2e-6, False),
}


@pytest.mark.parametrize("target", sorted(REFERENCE))
def test_target_settings_match_the_reference_commands(target):
    bs, accum, lr, wd, warm, epochs, lr_vision, frozen = REFERENCE[target]
    gpus = 8
    t = load_config("biomed", None, [f"train.target={target}", f"train.num_workers={gpus}"]).train
    assert t.target == target
    assert (t.batch_size, t.grad_accum) == (bs, accum)  # with 8 workers, the reference's exact split
    assert t.batch_size * t.grad_accum * t.num_workers == bs * accum * gpus == 128
    assert (t.learning_rate, t.weight_decay, t.warmup_ratio, t.epochs) == (lr, wd, warm, epochs)
    assert (t.lr_vision, t.freeze_vision, t.lr_scheduler, t.max_length) == (lr_vision, frozen, "cosine", 6144)
    one_gpu = load_config("biomed", None, [f"train.target={target}"]).train
    assert one_gpu.batch_size * one_gpu.grad_accum == 128  # same global batch through accumulation


def test_published_domain_configs_use_the_qwen2_vl_2b_target():
    for domain in ("biomed", "food"):
        t = load_config(domain).train
        assert (t.target, t.model, t.learning_rate, t.weight_decay, t.warmup_ratio) == (
            "qwen2_vl_2b", "Qwen/Qwen2-VL-2B-Instruct", 1e-5, 0.1, 0.1)
        assert (t.batch_size * t.grad_accum, t.max_length) == (128, 6144)
    assert load_config("biomed", None, ["train.target=synthesizer_llava_next_llama3_8b"]).train.method == "sft"


def test_precedence_target_below_domain_profile_and_cli(tmp_path):
    assert load_config("biomed", None, ["train.learning_rate=3e-5"]).train.learning_rate == 3e-5
    tiny = load_config("biomed", "tiny").train
    assert tiny.target is None and tiny.model == "tiny://vlm" and tiny.grad_accum == 1
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  model: some/model\n  global_batch_size: 16\n  batch_size: 4\n")
    t = load_config("food", None, [f"train.target={own}"]).train
    assert (t.model, t.grad_accum, t.weight_decay) == ("some/model", 4, 0.0)


def test_bad_targets_fail_with_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="unknown train.target 'nope'.*qwen2_vl_2b"):
        load_config("biomed", None, ["train.target=nope"])
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 2\njudge:\n  model: x\n")
    with pytest.raises(ConfigError, match="only set the 'train' section"):
        load_config("biomed", None, [f"train.target={other}"])
    with pytest.raises(ConfigError, match="not a multiple"):
        load_config("biomed", None, ["train.batch_size=7"])
    with pytest.raises(ConfigError, match="contradicts"):
        load_config("biomed", None, ["train.grad_accum=3"])
