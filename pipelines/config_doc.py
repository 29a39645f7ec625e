"""Render the configuration reference (docs/configuration.md) from the pydantic models.

    python -m pipelines.config_doc > docs/configuration.md

Every section of `RunConfig` is rendered recursively as a Markdown table (key, type, default,
description); a test fails when the committed file differs from a fresh render.
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HEADER = """\
# Configuration reference

Generated from the pydantic models by `python -m pipelines.config_doc > docs/configuration.md`;
do not edit by hand (a test fails when this file is stale).

A run's config is built from field defaults < `pipelines/configs/targets/<train.target>.yaml` (published
training settings of a target model) < `pipelines/configs/<domain>.yaml` <
`pipelines/configs/profiles/<profile>.yaml` < dotted CLI overrides (`synth.max_tokens=256`).
Unknown keys are errors. Each table lists a section's fields by their full dotted key.
"""


def _section(annotation: Any) -> type[BaseModel] | None:
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def type_name(annotation: Any) -> str:
    """A short, stable, human-readable rendering of a field annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"))


def constraint_text(field: FieldInfo) -> str:
    """Numeric bounds and length limits declared with Field(ge=..., ...), e.g. ">= 1, <= 8"."""
    parts = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_model(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Markdown for one section and, after it, each nested section."""
    title = prefix.rstrip(".") or "top level"
    doc = (model.__doc__ or "").strip().splitlines()
    lines = [f"## `{title}`" if prefix else f"## {title}", ""]
    if doc and model.__doc__ is not BaseModel.__doc__:
        lines += [doc[0], ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    nested = []
    for name, field in model.model_fields.items():
        sub = _section(field.annotation)
        if sub is not None:
            nested.append((prefix + name, sub))
            typ, default = f"section [`{prefix + name}`](#{(prefix + name).replace('.', '')})", "(section)"
        else:
            typ, default = f"`{_cell(type_name(field.annotation))}`", f"`{_cell(default_text(field))}`"
            if bounds := constraint_text(field):
                typ += f" ({_cell(bounds)})"
        lines.append(f"| `{prefix + name}` | {typ} | {default} | {_cell(field.description or '')} |")
    lines.append("")
    for key, sub in nested:
        lines += render_model(sub, key + ".")
    return lines


def render() -> str:
    from pipelines.config import RunConfig

    return HEADER + "\n" + "\n".join(render_model(RunConfig)).rstrip() + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
