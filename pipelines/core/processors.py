"""Load a model's HF processor, also where transformers' video processors cannot load.

transformers 5.x gives the Qwen2-VL / Qwen2.5-VL processors a ``video_processor`` part, and every video processor
needs torchvision. On the CPU machines torchvision cannot load (docs: ENVIRONMENT.md), so
``AutoProcessor.from_pretrained`` fails for those families although images only need the PIL image processor.
`load_processor` then builds the processor without its video part (decided by whether torchvision is importable,
not by catching an error); such a processor handles images and text, refuses videos, and saves the parts it has
(tokenizer, image processor, chat template, ``processor_config.json``) so the saved folder loads again the same way.
Everywhere else it is plain ``AutoProcessor.from_pretrained``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def processor_class_name(path: str | Path) -> str | None:
    """The `processor_class` a local model folder declares (processor, preprocessor or tokenizer config)."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = Path(path) / name
        if f.is_file():
            value = json.loads(f.read_text()).get("processor_class")
            if value:
                return value
    return None


def load_processor(path: str | Path, **kwargs: Any) -> Any:
    """The processor of the model at `path` (a local folder or a hub id)."""
    from transformers import AutoProcessor

    name = processor_class_name(path) if Path(path).is_dir() else None
    if name is not None and not torchvision_available():
        import transformers

        cls = getattr(transformers, name, None)
        if cls is not None and "video_processor" in cls.get_attributes():
            log.warning("%s: torchvision is not importable; loading %s without its video processor (images only)",
                        path, name)
            return _image_only(cls).from_parts(path, **kwargs)
    return AutoProcessor.from_pretrained(str(path), **kwargs)


@functools.cache
def _image_only(cls: type) -> type:
    """`cls` with an optional (None) video processor: built from parts, saved as parts."""

    class ImageOnly(cls):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None and argument_name == "video_processor":
                return None  # the class check itself would import the torchvision-only video module
            return super().check_argument_for_proper_class(argument_name, argument)

        @classmethod
        def from_parts(cls_, path: str | Path, **kw: Any) -> Any:
            from transformers import AutoImageProcessor, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), **kw)
            image_processor = AutoImageProcessor.from_pretrained(str(path), **kw)
            template_file = Path(path) / "chat_template.jinja"
            template = template_file.read_text() if template_file.is_file() else tokenizer.chat_template
            return cls_(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                        chat_template=template)

        def save_pretrained(self, save_directory: str | Path, **kw: Any) -> list[str]:
            out = Path(save_directory)
            out.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(out)
            self.image_processor.save_pretrained(out)
            if self.chat_template:
                (out / "chat_template.jinja").write_text(self.chat_template)
            (out / "processor_config.json").write_text(json.dumps({"processor_class": cls.__name__}, indent=2))
            return [str(out)]

        def __call__(self, *args: Any, videos: Any = None, **kw: Any) -> Any:
            if videos is not None:
                raise ValueError(f"{cls.__name__} was loaded without its video processor (no torchvision)")
            return super().__call__(*args, **kw)

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    return ImageOnly


def image_only_processor(cls: type, **parts: Any) -> Any:
    """Build `cls` from an image processor and tokenizer without a video processor (fixtures use this)."""
    return _image_only(cls)(video_processor=None, **parts)
