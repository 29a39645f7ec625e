"""Offline tiny models for tests and smoke runs: ``tiny://vlm``, ``tiny://judge``, ``tiny://tsm``.

Nothing is downloaded: configs are written in code, weights come from a fixed seed, and the tokenizer is a
byte-level BPE trained with ``tokenizers`` on ``tiny_assets/corpus.txt``. Two builds give bit-identical files.
Builds are cached under ``cache_root()/tiny-<name>-<VERSION>-<fingerprint>``; the fingerprint hashes this file,
the assets and the transformers/tokenizers versions, so an edited recipe never reuses a stale folder.

Models
- ``tiny://vlm``: Idefics3 (SmolVLM-style). Llama text model (hidden 128, 2 layers, 2 heads, 1 KV head,
  head_dim 64, 4096 positions), vision tower (hidden 32, 2 layers, 32 px images, patch 8), scale_factor 2,
  so one image is ``image_seq_len = 4`` ``<image>`` tokens. Loads with ``AutoProcessor`` +
  ``AutoModelForImageTextToText`` and in vLLM (CPU included).
- ``tiny://judge``: text-only ``LlamaForCausalLM`` with the same text recipe and tokenizer; no chat
  template (it stands in for a base LM).
- ``tiny://tsm``: ``ViTForImageClassification`` (32 px, patch 8, hidden 32, 2 layers), 4 labels
  (``TSM_LABELS``), ``output_hidden_states=True`` so a CLS feature can be taken; PIL image processor.

Chat template of the VLM (``tiny_assets/chat_template.jinja``), SmolVLM/Idefics3 style. Content is a string
or a list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts::

    <|im_start|>User:<image>Describe the image.<end_of_utterance>
    Assistant: A bowl of soup.<end_of_utterance>
    Assistant:                      <- add_generation_prompt=True

Exactly: ``<|im_start|>`` once at the start; each message is ``Role`` + (``":"`` if its first part is an image,
else ``": "``) + parts + ``"<end_of_utterance>\\n"``; the generation prompt is ``"Assistant:"``.
The processor expands each ``<image>`` into ``<fake_token_around_image><global-img><image>x4<fake_token_around_image>``;
with vLLM, pass the prompt with one ``<image>`` per image and ``multi_modal_data={"image": pil}``.
Stop string: ``STOP_STRING = "<end_of_utterance>"`` (also the tokenizer's eos token).

CLI: ``python -m pipelines.tiny build [vlm|judge|tsm|all]`` prints the built paths.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata, resources
from pathlib import Path

logger = logging.getLogger(__name__)

VERSION = "v2"  # bump when a recipe changes (the fingerprint also catches edits to this file and its assets)
PREFIX = "tiny://"
NAMES = ("vlm", "judge", "tsm")
SEED = 1234
STOP_STRING = "<end_of_utterance>"
IMAGE_SEQ_LEN = 4  # (32 // 8) ** 2 / 2 ** 2
TSM_LABELS = ("normal", "abnormal", "food", "other")

# Order fixes the token ids (0..N-1); <row_i_col_j> are the tile tags the Idefics3 processor looks up.
SPECIAL_TOKENS = (
    ["<|pad|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
    + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
)
VOCAB_SIZE = 1024

TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,  # vLLM's CPU attention needs head_dim >= 32
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def cache_root() -> Path:
    """Where tiny models live: ``$VLM_ADAPT_CACHE`` or ``~/.cache/vlm-adapt``."""
    env = os.environ.get("VLM_ADAPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlm-adapt"


MINIWORLD_PREFIX = "miniworld://"


def resolve_model(ref: str) -> str:
    """``tiny://<name>`` (untrained tiny model) or ``miniworld://<name>`` (trained model of the method check,
    `pipelines.miniworld.models`) -> local folder, built on first use; anything else is returned unchanged."""
    if ref.startswith(MINIWORLD_PREFIX):
        from pipelines.miniworld import models

        return str(models.ensure(ref[len(MINIWORLD_PREFIX):]))
    if not ref.startswith(PREFIX):
        return ref
    from pipelines import tiny_families  # the paper's families (tiny://qwen2-vl, llava-next, mllama, ...)

    if ref[len(PREFIX):] in tiny_families.FAMILIES:
        return str(tiny_families.build_family(ref[len(PREFIX):]))
    return str(build_tiny(ref[len(PREFIX):]))


def build_tiny(name: str, cache_dir: Path | None = None) -> Path:
    """Build (once) and return the folder of tiny model ``name``; safe when processes race for it."""
    if name not in NAMES:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {NAMES}")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / folder_name(name)
    if _complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{final.name}.lock"):
        if _complete(final):  # another process built it while we waited
            return final
        if final.exists():  # leftover without a stamp (not produced by this code); never trust it
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        try:
            _BUILDERS[name](tmp)
            stamp = {"name": name, "version": VERSION, "fingerprint": recipe_fingerprint(), "seed": SEED}
            (tmp / "tiny_build.json").write_text(json.dumps(stamp))
            tmp.chmod(0o755)  # mkdtemp makes 0700; other users/processes of a shared cache must read it
            os.rename(tmp, final)  # atomic: readers see a whole folder or none
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("built tiny://%s at %s", name, final)
    return final


def folder_name(name: str) -> str:
    """Cache folder of tiny model ``name`` for the current recipe."""
    return f"tiny-{name}-{VERSION}-{recipe_fingerprint()}"


@functools.cache
def recipe_fingerprint() -> str:
    """Short hash of everything that shapes the built files: this module, its assets, library versions."""
    h = hashlib.sha256(VERSION.encode())
    h.update(Path(__file__).read_bytes())
    for asset in ("corpus.txt", "chat_template.jinja"):
        h.update(_asset(asset).encode())
    for dist in ("transformers", "tokenizers"):
        h.update(f"{dist}=={metadata.version(dist)}".encode())
    return h.hexdigest()[:10]


def _complete(folder: Path) -> bool:
    return (folder / "tiny_build.json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    """Fixed torch RNG for weight init without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def _asset(name: str) -> str:
    return resources.files("pipelines.tiny_assets").joinpath(name).read_text(encoding="utf-8")


def build_tokenizer():
    """Byte-level BPE trained on the built-in corpus, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown token needed
        show_progress=False,
    )
    lines = [line for line in _asset("corpus.txt").splitlines() if line.strip()]
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token=STOP_STRING,
        pad_token="<|pad|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        model_max_length=TEXT_CONFIG["max_position_embeddings"],
        padding_side="left",  # decoder-only batched generation
    )


def _token_ids(tokenizer) -> dict:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|pad|>", "<|im_start|>", STOP_STRING, "<image>")}
    return dict(pad=ids["<|pad|>"], bos=ids["<|im_start|>"], eos=ids[STOP_STRING], image=ids["<image>"])


def _build_vlm(out: Path) -> None:
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = build_tokenizer()
    template = _asset("chat_template.jinja")
    tokenizer.chat_template = template
    ids = _token_ids(tokenizer)
    text = dict(TEXT_CONFIG, model_type="llama", vocab_size=len(tokenizer),
                pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                  image_size=32, patch_size=8)
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=2, image_token_id=ids["image"],
                            pad_token_id=ids["pad"], tie_word_embeddings=False)
    with _seeded():
        model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                                               pad_token_id=ids["pad"])
    model.save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                                do_image_splitting=False)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=IMAGE_SEQ_LEN, chat_template=template)
    processor.save_pretrained(out)


def _build_judge(out: Path) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    ids = _token_ids(tokenizer)
    config = LlamaConfig(**TEXT_CONFIG, vocab_size=len(tokenizer), pad_token_id=ids["pad"],
                         bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    with _seeded():
        model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                                               pad_token_id=ids["pad"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tsm(out: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=len(TSM_LABELS), output_hidden_states=True,
        id2label=dict(enumerate(TSM_LABELS)), label2id={label: i for i, label in enumerate(TSM_LABELS)},
    )
    with _seeded():
        model = ViTForImageClassification(config).eval()
    model.save_pretrained(out)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)


_BUILDERS: dict[str, Callable[[Path], None]] = {"vlm": _build_vlm, "judge": _build_judge, "tsm": _build_tsm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tiny", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build tiny models (cached) and print their paths")
    build.add_argument("names", nargs="*", default=["all"], choices=[*NAMES, "all"], help="models to build")
    build.add_argument("--cache-dir", type=Path, default=None, help="cache root (default: $VLM_ADAPT_CACHE)")
    args = parser.parse_args(argv)
    names = NAMES if "all" in args.names else tuple(dict.fromkeys(args.names))
    for name in names:
        print(f"tiny://{name}\t{build_tiny(name, args.cache_dir)}")  # CLI output, not logging


if __name__ == "__main__":
    main()
