import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pipelines.config import RunConfig
from pipelines.config_doc import render, render_model, type_name

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def _keys(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        sub = next((t for t in (field.annotation,) if isinstance(t, type) and issubclass(t, BaseModel)), None)
        yield prefix + name
        if sub is not None:
            yield from _keys(sub, f"{prefix}{name}.")


def test_committed_configuration_doc_is_current():
    assert DOC.read_text() == render(), (
        "docs/configuration.md is stale: run `python -m pipelines.config_doc > docs/configuration.md`")


def test_every_field_of_every_section_has_a_row():
    text = render()
    rows = re.findall(r"^\| `([\w.]+)` \|", text, flags=re.M)
    keys = list(_keys(RunConfig))
    assert len(keys) > 100 and sorted(rows) == sorted(keys)  # recursive: nothing missing, nothing twice
    for section in ("synth", "judge", "train.lora", "eval.resources", "hub"):
        assert f"## `{section}`" in text


def test_row_shows_type_bounds_default_and_description():
    class Demo(BaseModel):
        mode: Literal["a", "b"] = Field("a", description="Pick | one.")
        n: int | None = Field(None, ge=1, description="Count.")
        tags: list[str] = Field(default_factory=lambda: ["x"], description="Tags.")

    lines = render_model(Demo, "demo.")
    assert "| `demo.mode` | `\"a\" \\| \"b\"` | `\"a\"` | Pick \\| one. |" in lines
    assert "| `demo.n` | `int \\| None` (>= 1) | `null` | Count. |" in lines
    assert "| `demo.tags` | `list[str]` | `[\"x\"]` | Tags. |" in lines
    assert type_name(dict[str, float]) == "dict[str, float]"


def test_module_entry_point_prints_the_doc():
    res = subprocess.run([sys.executable, "-m", "pipelines.config_doc"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == render()
