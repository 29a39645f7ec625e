"""Offline tiny random builds of the paper's model families: ``tiny://qwen2-vl``, ``tiny://qwen2.5-vl``,
``tiny://llava-next``, ``tiny://mllama``.

Each build uses the family's real model class and processor class (PIL image processor: torchvision does not
load here), a byte-level BPE tokenizer trained offline on ``tiny_assets/corpus.txt`` that carries the family's
real special tokens, and the family's real chat template (``tiny_assets/chat_template_<family>.jinja``). Weights
come from a fixed seed; builds are cached under ``cache_root()/tiny-<name>-<VERSION>-<fingerprint>`` with the
same lock-and-rename protocol as `pipelines.tiny` (the fingerprint hashes this file, the assets and library
versions). Sizes: text hidden 64, 2 layers, 2 heads, 1 KV head; vision towers of width 32 on 32-px images;
each build well under 1 M parameters and about a second to make.

Families
- ``qwen2-vl`` / ``qwen2.5-vl`` (Qwen/Qwen2-VL-2B-Instruct, Qwen/Qwen2.5-VL-*-Instruct): ``<|im_start|>`` chat
  template with the default system turn; ``<|vision_start|><|image_pad|><|vision_end|>``; patch 8, merge 2, so a
  32x32 image is 4 ``<|image_pad|>`` tokens; M-RoPE (``mrope_section`` [4, 6, 6] of head_dim 32).
- ``llava-next`` (the AdaMLLM synthesizer family, LLaVA-NeXT-Llama3): Llama-3 special tokens, the chat template
  of ``llava-hf/llama3-llava-next-8b-hf`` with the image placeholder spelled ``<|reserved_special_token_4|>``, the
  image token of AdaMLLM's LLaVA-NeXT-Llama3 checkpoints (bigai-ai/QA-Synthesizer
  vllm_inference/utils/task.py, ``BaseTask.image_token``), so the ``llava_llama3`` synth preset runs on it.
  CLIP tower (32 px, patch 8), anyres pinpoints 32x32 / 32x64 / 64x32.
- ``mllama`` (meta-llama/Llama-3.2-11B-Vision-Instruct): Llama-3.2 special tokens, its chat template (no system
  turn when images are present), one ``<|image|>`` token per image, images through cross-attention layers
  (``cross_attention_layers=[1]``), up to 4 tiles of 32 px.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from pipelines.processors import image_only_processor
from pipelines.tiny import SEED, _asset, _complete, _file_lock, _seeded, cache_root

logger = logging.getLogger(__name__)

VERSION = "v1"
VOCAB_SIZE = 1024
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Llama-3 order: begin, end, reserved 0-3, headers, reserved 4, eot (ids 128000..128009 in the real vocabulary).
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>", "<pad>"]
# Llama-3.2: 128004 is the pad token, 128008 <|eom_id|>, 128010 <|python_tag|>, 128256 <|image|>.
LLAMA32_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
                    "<|image|>"]
LLAVA_IMAGE_TOKEN = "<|reserved_special_token_4|>"


def build_family(name: str, cache_dir: Path | None = None) -> Path:
    """Build (once) and return the folder of tiny family ``name``; safe when processes race for it."""
    if name not in FAMILIES:
        raise ValueError(f"unknown tiny family {name!r}; expected one of {tuple(FAMILIES)}")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / f"tiny-{name}-{VERSION}-{fingerprint()}"
    if _complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{final.name}.lock"):
        if _complete(final):
            return final
        if final.exists():
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        try:
            FAMILIES[name](tmp)
            stamp = {"name": name, "version": VERSION, "fingerprint": fingerprint(), "seed": SEED}
            (tmp / "tiny_build.json").write_text(json.dumps(stamp))
            tmp.chmod(0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("built tiny://%s at %s", name, final)
    return final


@functools.cache
def fingerprint() -> str:
    """Short hash of this module, the assets it reads and the library versions."""
    h = hashlib.sha256(VERSION.encode())
    h.update(Path(__file__).read_bytes())
    for asset in ("corpus.txt", *TEMPLATES.values()):
        h.update(_asset(asset).encode())
    for dist in ("transformers", "tokenizers"):
        h.update(f"{dist}=={metadata.version(dist)}".encode())
    return h.hexdigest()[:10]


TEMPLATES = {"qwen2-vl": "chat_template_qwen2_vl.jinja", "llava-next": "chat_template_llava_next_llama3.jinja",
             "mllama": "chat_template_mllama.jinja"}


def train_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str, add_bos: bool = False):
    """Byte-level BPE over the built-in corpus with `specials` first (ids 0..n-1). `add_bos` prepends `bos` when
    `add_special_tokens=True`, as the Llama-3 tokenizers' TemplateProcessing post-processor does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([ln for ln in _asset("corpus.txt").splitlines() if ln.strip()], trainer=trainer)
    if add_bos and bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, bos_id)])
    named = {bos, eos, pad}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
        additional_special_tokens=[t for t in specials if t not in named],
        model_max_length=TEXT["max_position_embeddings"], padding_side="left",
    )


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _save(out: Path, model, processor, eos_ids: list[int], pad_id: int, bos_id: int | None) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_ids, pad_token_id=pad_id)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _qwen_vl(out: Path, *, v25: bool) -> None:
    import transformers as tf

    tokenizer = train_tokenizer(QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>")
    template = _asset(TEMPLATES["qwen2-vl"])  # Qwen2.5-VL ships the same template
    tokenizer.chat_template = template
    pad, eos, image, video, vstart, vend = _ids(tokenizer, "<|endoftext|>", "<|im_end|>", "<|image_pad|>",
                                                "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    text = dict(TEXT, vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos, pad_token_id=pad,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
    vision = dict(depth=2, num_heads=2, in_channels=3, patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
    if v25:
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=TEXT["hidden_size"], window_size=32,
                      fullatt_block_indexes=[1])
        cfg_cls, model_cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration
        proc_cls = tf.Qwen2_5_VLProcessor
    else:
        vision.update(embed_dim=32, hidden_size=TEXT["hidden_size"], mlp_ratio=2)
        cfg_cls, model_cls, proc_cls = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLProcessor
    config = cfg_cls(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                     vision_start_token_id=vstart, vision_end_token_id=vend, tie_word_embeddings=False)
    with _seeded():
        model = model_cls(config).eval()
    # factor = patch 8 * merge 2 = 16 px: a 32x32 image is a 4x4 patch grid = 4 merged <|image_pad|> tokens
    image_processor = tf.Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                                  min_pixels=32 * 32, max_pixels=64 * 64)
    # Built without a video processor: transformers' video processors need torchvision (see pipelines.processors).
    processor = image_only_processor(proc_cls, image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=template)
    _save(out, model, processor, [eos, pad], pad, None)


def _build_llava_next(out: Path) -> None:
    import transformers as tf

    tokenizer = train_tokenizer(LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<pad>",
                                add_bos=True)
    template = _asset(TEMPLATES["llava-next"])
    tokenizer.chat_template = template
    bos, end, eot, pad, image = _ids(tokenizer, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<pad>",
                                     LLAVA_IMAGE_TOKEN)
    text = dict(TEXT, model_type="llama", vocab_size=len(tokenizer), bos_token_id=bos, eos_token_id=eot,
                pad_token_id=pad, head_dim=32)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = tf.LlavaNextConfig(text_config=text, vision_config=vision, image_token_index=image,
                                image_grid_pinpoints=pinpoints, vision_feature_select_strategy="default",
                                vision_feature_layer=-2, image_seq_length=16, tie_word_embeddings=False)
    with _seeded():
        model = tf.LlavaNextForConditionalGeneration(config).eval()
    image_processor = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                    image_grid_pinpoints=pinpoints)
    processor = tf.LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                      vision_feature_select_strategy="default", image_token=LLAVA_IMAGE_TOKEN,
                                      num_additional_image_tokens=1, chat_template=template)
    _save(out, model, processor, [eot, end], pad, bos)


def _build_mllama(out: Path) -> None:
    import torch
    import transformers as tf

    tokenizer = train_tokenizer(LLAMA32_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>",
                                pad="<|finetune_right_pad_id|>", add_bos=True)
    template = _asset(TEMPLATES["mllama"])
    tokenizer.chat_template = template
    bos, end, eom, eot, pad, image = _ids(tokenizer, "<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>",
                                          "<|eot_id|>", "<|finetune_right_pad_id|>", "<|image|>")
    # Mllama's embedding table has vocab_size + 8 rows; the image token sits inside the tokenizer's vocabulary.
    text = dict(TEXT, vocab_size=len(tokenizer), cross_attention_layers=[1], bos_token_id=bos, eos_token_id=eot,
                pad_token_id=pad, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                  attention_heads=2, image_size=32, patch_size=8, max_num_tiles=4,
                  intermediate_layers_indices=[0], vision_output_dim=64)
    config = tf.MllamaConfig(text_config=text, vision_config=vision, image_token_index=image)
    with _seeded():
        model = tf.MllamaForConditionalGeneration(config).eval()
    # Mllama initialises every tanh gate at 0 (cross-attention off, tile embeddings off) and learns them; a
    # released checkpoint has them open. Open them so images reach the text and gradients reach the vision side.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate", "_gate")):
                p.fill_(0.5)
    image_processor = tf.MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=4)
    processor = tf.MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    _save(out, model, processor, [eot, eom, end], pad, bos)


FAMILIES: dict[str, Callable[[Path], None]] = {
    "qwen2-vl": functools.partial(_qwen_vl, v25=False),
    "qwen2.5-vl": functools.partial(_qwen_vl, v25=True),
    "llava-next": _build_llava_next,
    "mllama": _build_mllama,
}
