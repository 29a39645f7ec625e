"""Security checks across the project: remote code off, no unsafe deserialization, paths stay in their
root, secrets never printed and never configurable."""

import ast
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipelines.config import RunConfig, builtin_config_names, load_config
from pipelines.core.images import ImageRejected, safe_resolve

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synth", "filters", "posttrain", "pipelines")

# (path relative to ROOT, rule) -> why it is safe. Keep each entry justified; the test fails on stale ones.
ALLOWED: dict[tuple[str, str], str] = {}


# -- config: trust_remote_code ---------------------------------------------------------------------


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield prefix + name, field
        for t in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                yield from _fields(t, f"{prefix}{name}.")


def _get(cfg: BaseModel, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


REMOTE_CODE_KEYS = [name for name, _ in _fields(RunConfig) if name.endswith("trust_remote_code")]


def test_every_engine_section_has_trust_remote_code_off_by_default():
    # the synthesizer, the judge and the eval engine all load hub models: each must carry the switch
    sections = {k.rsplit(".", 1)[0].split(".")[0] for k in REMOTE_CODE_KEYS}
    assert {"synth", "judge", "eval"} <= sections, REMOTE_CODE_KEYS
    cfg = RunConfig()
    assert {k: _get(cfg, k) for k in REMOTE_CODE_KEYS} == {k: False for k in REMOTE_CODE_KEYS}


@pytest.mark.parametrize("domain", builtin_config_names())
@pytest.mark.parametrize("profile", [None, "tiny"])
def test_builtin_domain_configs_keep_trust_remote_code_off(domain, profile):
    cfg = load_config(domain, profile)
    assert {k: _get(cfg, k) for k in REMOTE_CODE_KEYS} == {k: False for k in REMOTE_CODE_KEYS}


# -- source scan -------------------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, rule) for every unsafe construct in a parsed module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append((node.lineno, f"import {node.module}"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                found.append((node.lineno, f"{name}("))
            elif name == "torch.load" or name.endswith(".torch.load"):
                if not _is_true(_kw(node, "weights_only")):
                    found.append((node.lineno, "torch.load without weights_only=True"))
            elif name in ("yaml.load", "yaml.load_all"):
                loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
                if loader is None or _dotted(loader).split(".")[-1] in UNSAFE_YAML_LOADERS:
                    found.append((node.lineno, "yaml.load with an unsafe loader"))
            elif name in ("yaml.unsafe_load", "yaml.full_load"):
                found.append((node.lineno, name))
            elif name.endswith(("np.load", "numpy.load")) and _is_true(_kw(node, "allow_pickle")):
                found.append((node.lineno, "np.load(allow_pickle=True)"))
            if _is_true(_kw(node, "trust_remote_code")):
                found.append((node.lineno, "trust_remote_code=True"))
            if _is_true(_kw(node, "shell")):
                found.append((node.lineno, "shell=True"))
    return found


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 20  # the scan really looks at the project
    return files


def test_scanner_catches_each_rule():
    bad = """
import pickle
from dill import loads
import torch, yaml, numpy as np
eval(text); exec(code)
torch.load(path); torch.load(path, weights_only=False)
yaml.load(text); yaml.load(text, Loader=yaml.Loader); yaml.unsafe_load(text)
np.load(p, allow_pickle=True)
AutoModel.from_pretrained(p, trust_remote_code=True)
subprocess.run(cmd, shell=True)
"""
    rules = [r for _, r in scan_source(ast.parse(bad))]
    assert len(rules) == 12, rules
    good = """
import torch, yaml, json
torch.load(path, weights_only=True, map_location="cpu")
yaml.load(text, Loader=_Loader); yaml.safe_load(text)
model.eval(); json.loads(s)
AutoModel.from_pretrained(p, trust_remote_code=cfg.trust_remote_code)
"""
    assert scan_source(ast.parse(good)) == []


def test_no_unsafe_deserialization_or_code_execution_in_the_packages():
    found, used = [], set()
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        for line, rule in scan_source(ast.parse(path.read_text(), filename=rel)):
            if (rel, rule) in ALLOWED:
                used.add((rel, rule))
            else:
                found.append(f"{rel}:{line}: {rule}")
    assert found == []
    assert set(ALLOWED) == used, "stale allow-list entries"


# -- paths ---------------------------------------------------------------------------------------------


def test_image_paths_never_leave_their_root(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (root / "link.png").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    assert safe_resolve(root, "sub/a.png") == (root / "sub" / "a.png").resolve()
    assert safe_resolve(root, str(root / "sub" / "a.png")) == (root / "sub" / "a.png").resolve()
    for rel in ["../secret.png", "sub/../../secret.png", str(outside), "/etc/passwd", "link.png",
                "dirlink/secret.png"]:
        with pytest.raises(ImageRejected) as err:
            safe_resolve(root, rel)
        assert err.value.reason == "path_escape", rel


# -- secrets ----------------------------------------------------------------------------------------------

SECRET_NAME = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential", "auth")


def _could_hold_secret(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1].lower()
    # counts of tokens (max_tokens, num_tokens, connector_tokens) are numbers, not credentials
    return any(w in leaf for w in SECRET_NAME) and not leaf.endswith("tokens")


def test_run_config_has_no_field_that_could_hold_a_token():
    names = [n for n, _ in _fields(RunConfig)]
    assert "synth.max_tokens" in names and len(names) > 50  # the walk reaches nested sections
    assert [n for n in names if _could_hold_secret(n)] == []
    assert _could_hold_secret("hub.token") and _could_hold_secret("hub.hf_token")  # the filter is live
    assert _could_hold_secret("eval.api_key") and not _could_hold_secret("synth.max_tokens")


def test_cli_dry_run_never_prints_the_token(tmp_path):
    secret = "secret-value-7f3a9c"
    env = {**os.environ, "HF_TOKEN": secret, "VLM_ADAPT_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pipelines.run", "--profile", "tiny", "--dry-run", "-v",
           "--out", str(tmp_path / "out"), "--push-to-hub", "org/ds"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip()  # it did print a plan
    assert secret not in res.stdout and secret not in res.stderr
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
