"""Tiny random builds of the paper's families: real classes, real special tokens, the real chat templates
(expected strings written from the model cards' prompt formats), and the processors' vision tensors computed
by hand from each family's image rules."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from PIL import Image

from tests.family_matrix import cell

FAMILIES = ("qwen2-vl", "qwen2.5-vl", "llava-next", "mllama")
MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A red cell."}]},
]
# Prompt formats from the model cards: Qwen2-VL README (system turn added by the template), llava-hf
# llama3-llava-next-8b-hf (image placeholder, then "\n" + text + <|eot_id|>; AdaMLLM's image token),
# Llama-3.2-Vision prompt format (bos, no system turn when an image is present, <|image|> then the text).
RENDERED = {
    "qwen2-vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n"
                "A red cell.<|im_end|>\n",
    "llava-next": "<|start_header_id|>user<|end_header_id|>\n\n<|reserved_special_token_4|>\nWhat is it?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n\nA red cell.<|eot_id|>",
    "mllama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is it?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nA red cell.<|eot_id|>",
}
RENDERED["qwen2.5-vl"] = RENDERED["qwen2-vl"]
CLASSES = {
    "qwen2-vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2VLImageProcessorPil"),
    "qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "Qwen2VLImageProcessorPil"),
    "llava-next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor", "LlavaNextImageProcessorPil"),
    "mllama": ("MllamaForConditionalGeneration", "MllamaProcessor", "MllamaImageProcessorPil"),
}
SPECIALS = {
    "qwen2-vl": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"],
    "llava-next": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   "<|reserved_special_token_4|>"],
    "mllama": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
               "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>", "<|image|>"],
}
SPECIALS["qwen2.5-vl"] = SPECIALS["qwen2-vl"]


@pytest.fixture(scope="module")
def built():
    from pipelines.processors import load_processor
    from pipelines.tiny import resolve_model

    return {f: (resolve_model(f"tiny://{f}"), load_processor(resolve_model(f"tiny://{f}"))) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_build_has_real_classes_tokens_and_template(built, family):
    from transformers import AutoConfig, AutoModelForImageTextToText

    with cell(family, "build", "test_tiny_families"):
        path, proc = built[family]
        model_cls, proc_cls, image_cls = CLASSES[family]
        model = AutoModelForImageTextToText.from_pretrained(path)
        assert type(model).__name__ == model_cls and type(proc).__name__ == proc_cls
        assert type(proc.image_processor).__name__ == image_cls
        n_params = sum(p.numel() for p in model.parameters())
        assert 1e5 < n_params < 1.5e6, n_params
        tok = proc.tokenizer
        for t in SPECIALS[family]:  # each special is one token, never split into bytes
            ids = tok(t, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t, t
        assert proc.apply_chat_template(MESSAGES, tokenize=False) == RENDERED[family]
        cfg = AutoConfig.from_pretrained(path)
        token_id = getattr(cfg, "image_token_id", None) or cfg.image_token_index
        assert tok.convert_ids_to_tokens(token_id) == proc.image_token


def test_llama3_tokenizers_prepend_bos_like_the_real_ones(built):
    """Llama-3 tokenizers add <|begin_of_text|> through their post-processor; Qwen2 tokenizers add nothing."""
    for family in ("llava-next", "mllama"):
        tok = built[family][1].tokenizer
        assert tok("hi")["input_ids"][0] == tok.convert_tokens_to_ids("<|begin_of_text|>")
        assert tok("hi", add_special_tokens=False)["input_ids"][0] != tok.bos_token_id
    tok = built["qwen2-vl"][1].tokenizer
    assert tok("hi")["input_ids"] == tok("hi", add_special_tokens=False)["input_ids"]


def test_builds_are_cached_and_bit_identical(tmp_path):
    from pipelines.tiny_families import build_family

    a = build_family("llava-next", tmp_path / "a")
    b = build_family("llava-next", tmp_path / "b")
    assert a.name == b.name and build_family("llava-next", tmp_path / "a") == a
    digest = [hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_unknown_family_fails_loudly(tmp_path):
    from pipelines.tiny_families import build_family

    with pytest.raises(ValueError, match="unknown tiny family"):
        build_family("qwen3-vl", tmp_path)


def _qwen_grid(h: int, w: int, patch: int = 8, merge: int = 2, lo: int = 32 * 32, hi: int = 64 * 64):
    """Qwen2-VL smart_resize (Qwen2-VL paper Sec. 2.1 / qwen-vl-utils): round to multiples of patch*merge,
    keep the pixel count within [min_pixels, max_pixels]."""
    f = patch * merge
    hb, wb = round(h / f) * f, round(w / f) * f
    if hb * wb > hi:
        beta = math.sqrt(h * w / hi)
        hb, wb = math.floor(h / beta / f) * f, math.floor(w / beta / f) * f
    elif hb * wb < lo:
        beta = math.sqrt(lo / (h * w))
        hb, wb = math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return 1, hb // patch, wb // patch


def _llava_next_tokens(h: int, w: int, grid: tuple[int, int], tile: int = 32, patch: int = 8) -> int:
    """LLaVA-NeXT anyres token count (LLaVA-NeXT `unpad_image` + newline per row + base image, CLS dropped by the
    'default' feature strategy): `grid` = (tiles down, tiles across) of the chosen pinpoint."""
    ph = pw = tile // patch
    cur_h, cur_w = ph * grid[0], pw * grid[1]
    if w / h > cur_w / cur_h:
        new_h = int(round(h * (cur_w / w), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(w * (cur_h / h), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    return cur_h * cur_w + cur_h + ph * pw


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tensors_follow_the_family_rules(built, family):
    with cell(family, "vision_inputs", "test_tiny_families"):
        proc = built[family][1]
        text = proc.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
        image = Image.new("RGB", (48, 32), "red")  # width 48, height 32
        enc = proc(text=[text], images=[[image]], return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"][0]
        n_image = int((ids == proc.tokenizer.convert_tokens_to_ids(proc.image_token)).sum())
        if family.startswith("qwen"):
            t, gh, gw = _qwen_grid(32, 48)
            assert enc["image_grid_thw"].tolist() == [[t, gh, gw]]
            assert tuple(enc["pixel_values"].shape) == (t * gh * gw, 3 * 2 * 8 * 8)  # C * temporal * patch^2
            assert n_image == t * gh * gw // 4  # 2x2 merge
            assert tuple(enc["mm_token_type_ids"].shape) == tuple(enc["input_ids"].shape)
            assert enc["mm_token_type_ids"][0].tolist() == [int(i == proc.image_token_id) for i in ids.tolist()]
        elif family == "llava-next":
            # pinpoint choice (LLaVA-NeXT select_best_resolution): 32x64 (h x w) keeps all 1536 pixels of the
            # 32x48 image with the least waste -> 1 x 2 tiles plus the base image
            assert tuple(enc["pixel_values"].shape) == (1, 3, 3, 32, 32)
            assert enc["image_sizes"].tolist() == [[32, 48]]
            assert n_image == _llava_next_tokens(32, 48, (1, 2))
        else:
            # Mllama: the smallest canvas of 32-px tiles that holds the 32x48 image without downscaling is 1 x 2
            # (aspect ratio id 2 in [(1,1),(1,2),(1,3),(1,4),(2,1),(2,2),(3,1),(4,1)], ids from 1)
            assert n_image == 1
            assert tuple(enc["pixel_values"].shape) == (1, 1, 4, 3, 32, 32)
            assert enc["aspect_ratio_ids"].tolist() == [[2]]
            assert enc["aspect_ratio_mask"].tolist() == [[[1, 1, 0, 0]]]
            # cross-attention: every token from the image token on sees the image's 2 real tiles
            p = int((ids == proc.image_token_id).nonzero()[0])
            expected = torch.zeros(1, len(ids), 1, 4, dtype=enc["cross_attention_mask"].dtype)
            expected[0, p:, 0, :2] = 1
            assert torch.equal(enc["cross_attention_mask"], expected)
