"""Root run configuration: defaults <- domain YAML <- profile YAML <- dotted CLI overrides."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from filters.config import ComposeConfig, JudgeConfig, MixConfig
from pipelines.core.configbase import Section
from posttrain.config import TrainConfig
from posttrain.eval.config import EvalConfig
from synth.config import SynthConfig

STAGES = ("ingest", "synth", "judge", "mix", "train", "eval")


class _Loader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false, so a label 'yes' stays a string."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class ConfigError(ValueError):
    """A bad config: the message names the key, the bad value and what is allowed."""


class InputConfig(Section):
    path: str | None = Field(
        None, description="Input: JSON file, folder, Parquet file/folder, WebDataset tar(s), or datasets dir/hub id."
    )
    format: Literal["auto", "json", "parquet", "hf", "webdataset"] = Field(
        "auto", description="Input format; 'auto' infers it from the path."
    )
    image_root: str | None = Field(
        None, description="Folder image paths are relative to (JSON/Parquet inputs); default: the input file's folder."
    )
    id_column: str | None = Field(None, description="Column holding a stable id (Parquet/datasets); None hashes content.")
    image_column: str = Field("image", description="Column holding image bytes, a path, or an HF Image (Parquet/datasets).")
    caption_column: str = Field("caption", description="Column holding the caption (Parquet/datasets).")
    split: str = Field("train", description="Split of a datasets dataset.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images with more pixels are rejected as decompression bombs."
    )
    min_caption_chars: int = Field(1, ge=1, description="Captions with fewer non-space characters are rejected.")
    limit: int | None = Field(None, ge=1, description="Read at most this many records (for trials).")


class HubConfig(Section):
    repo_id: str | None = Field(None, description="Dataset repo ORG/NAME to publish to (or use --push-to-hub).")
    private: bool = Field(True, description="Create the dataset repo as private.")
    license: str = Field("other", description="License field of the dataset card.")
    endpoint: str | None = Field(None, description="Hub endpoint URL (None: huggingface_hub default / HF_ENDPOINT).")
    timeout_s: float = Field(
        60.0, gt=0, le=3600,
        description="Connect/read/write timeout of every Hub HTTP request, in seconds (huggingface_hub sets none; "
        "a stalled Hub then fails after this, times huggingface_hub's retries for the calls it retries).",
    )


class RunConfig(Section):
    domain: str = Field("custom", description="Domain name, recorded in every output row and the card.")
    seed: int = Field(0, description="Global seed.")
    stages: list[Literal["ingest", "synth", "judge", "mix", "train", "eval"]] = Field(
        default_factory=lambda: ["ingest", "synth", "judge", "mix"],
        description="Stages to run, in pipeline order.",
    )
    rows_per_shard: int = Field(1000, ge=1, description="Rows per output Parquet shard (upper bound).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs given to the local Ray instance (None: all).")
    input: InputConfig = Field(default_factory=InputConfig, description="Where image-caption pairs come from.")
    synth: SynthConfig = Field(default_factory=SynthConfig, description="Visual instruction synthesizer.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Consistency judge.")
    compose: ComposeConfig = Field(default_factory=ComposeConfig, description="Answer composition.")
    mix: MixConfig = Field(default_factory=MixConfig, description="Mixing caption and synthetic tasks.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Post-training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    hub: HubConfig = Field(default_factory=HubConfig, description="Hugging Face Hub publishing.")

    # dotted field -> the reference it held before `with_resolved` (hash and display use the reference)
    _refs: dict[str, str] = PrivateAttr(default_factory=dict)

    def with_resolved(self, values: dict[str, str | None]) -> RunConfig:
        """A copy with dotted fields (e.g. ``synth.model``) set to resolved paths; `hash` keeps using the
        original references, so where a model cache lives does not change a run's identity."""
        data = self.model_dump()
        refs = dict(self._refs)
        for dotted, value in values.items():
            *parents, leaf = dotted.split(".")
            node = data
            for key in parents:
                node = node[key]
            refs.setdefault(dotted, node[leaf])
            node[leaf] = value
        new = type(self).model_validate(data)
        new._refs = refs
        return new

    def reference(self, dotted: str) -> Any:
        """The value a dotted field had in the config as written (before `with_resolved`)."""
        if dotted in self._refs:
            return self._refs[dotted]
        node: Any = self
        for key in dotted.split("."):
            node = getattr(node, key)
        return node

    def hash(self) -> str:
        """Hash of everything that changes the produced rows (not where they go)."""
        data = self.model_dump(mode="json", exclude={"hub", "train", "eval", "num_cpus", "stages"})
        data["input"].pop("limit", None)
        for dotted, ref in self._refs.items():
            *parents, leaf = dotted.split(".")
            node = data
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and leaf in node:
                node[leaf] = ref
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- loading -------------------------------------------------------------------------------------


def builtin_config_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("pipelines.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path: Path | Any, what: str) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at top level, got {type(data).__name__}")
    return data


def domain_yaml(domain: str) -> dict[str, Any]:
    if domain.endswith((".yaml", ".yml")) or "/" in domain:
        return _read_yaml(Path(domain), "config file")
    res = resources.files("pipelines.configs") / f"{domain}.yaml"
    if not res.is_file():
        raise ConfigError(
            f"unknown domain {domain!r}: allowed are {builtin_config_names()} or a path to a .yaml file"
        )
    return _read_yaml(res, "domain config")


def profile_yaml(profile: str) -> dict[str, Any]:
    res = resources.files("pipelines.configs") / "profiles" / f"{profile}.yaml"
    if not res.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("pipelines.configs") / "profiles").iterdir()
                       if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown profile {profile!r}: allowed are {names}")
    return _read_yaml(res, "profile")


def target_yaml(target: str) -> dict[str, Any]:
    """Published training settings of a target model: pipelines/configs/targets/<name>.yaml or a path.
    Such a file holds only a `train:` section."""
    if target.endswith((".yaml", ".yml")) or "/" in target:
        data = _read_yaml(Path(target), "target file")
    else:
        res = resources.files("pipelines.configs") / "targets" / f"{target}.yaml"
        if not res.is_file():
            names = sorted(p.name[:-5] for p in (resources.files("pipelines.configs") / "targets").iterdir()
                           if p.name.endswith(".yaml"))
            raise ConfigError(f"unknown train.target {target!r}: allowed are {names} or a path to a .yaml file")
        data = _read_yaml(res, "target")
    if set(data) - {"train"}:
        raise ConfigError(f"target {target!r} may only set the 'train' section, found {sorted(set(data) - {'train'})}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'synth.max_tokens=256' -> (['synth', 'max_tokens'], 256). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (example: synth.max_tokens=256)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc[:-1]:
        field = cur.model_fields.get(part) if isinstance(cur, type) and issubclass(cur, BaseModel) else None
        if field is None:
            return []
        cur = field.annotation
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return sorted(cur.model_fields)
    return []


def format_validation_error(err: ValidationError, model: type[BaseModel] = RunConfig) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, e["loc"])
            lines.append(f"unknown key {key!r}; allowed keys here: {', '.join(allowed)}")
        else:
            lines.append(f"bad value for {key!r}: {e.get('input')!r} ({e['msg']})")
    return "config error: " + "; ".join(lines)


def load_config(
    domain: str = "biomed",
    profile: str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Build the run config. Raises ConfigError with a one-line message on any problem.

    Precedence: field defaults < train.target file < domain YAML < profile YAML < CLI overrides. The target
    is read last (after overrides), so `train.target=<name>` on the command line switches it.
    """
    data: dict[str, Any] = domain_yaml(domain)
    if profile:
        data = deep_merge(data, profile_yaml(profile))
    for item in overrides or []:
        path, value = parse_override(item)
        apply_override(data, path, value)
    train = data.get("train")
    target = train.get("target") if isinstance(train, dict) else None
    if isinstance(target, str) and target:
        data = deep_merge(target_yaml(target), data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
