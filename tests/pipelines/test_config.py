import pytest
from pydantic import BaseModel

from pipelines.config import ConfigError, RunConfig, builtin_config_names, load_config, parse_override


def _models(model: type[BaseModel], seen=None):
    seen = seen if seen is not None else set()
    if model in seen:
        return seen
    seen.add(model)
    for f in model.model_fields.values():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _models(ann, seen)
    return seen


def test_every_field_has_a_description_and_forbids_extra():
    models = _models(RunConfig)
    assert len(models) >= 10  # input, synth, judge, compose, mix, train (+3 nested), eval, hub
    for m in models:
        assert m.model_config.get("extra") == "forbid", m.__name__
        for name, f in m.model_fields.items():
            assert f.description and len(f.description) > 5, f"{m.__name__}.{name} has no description"


@pytest.mark.parametrize("domain", ["biomed", "food"])
def test_domain_defaults_match_published_adamllm_settings(domain):
    cfg = load_config(domain)
    assert cfg.domain == domain
    assert cfg.synth.model == "AdaptLLM/visual-instruction-synthesizer"
    assert cfg.judge.model == "meta-llama/Meta-Llama-3-8B"
    assert cfg.synth.temperature == 0.0 and cfg.synth.max_tokens == 512
    assert cfg.judge.keep_labels == ["yes"]
    assert cfg.train.epochs == 1 and 1e-5 <= cfg.train.learning_rate <= 2e-5
    assert cfg.train.lr_scheduler == "cosine" and 0.03 <= cfg.train.warmup_ratio <= 0.10
    assert not cfg.synth.trust_remote_code and not cfg.judge.trust_remote_code


def test_builtin_domains_listed():
    assert {"biomed", "food"} <= set(builtin_config_names())


def test_tiny_profile_swaps_in_offline_models():
    cfg = load_config("biomed", "tiny")
    assert cfg.synth.model == "tiny://vlm" and cfg.judge.model == "tiny://judge" and cfg.train.model == "tiny://vlm"
    assert cfg.domain == "biomed"


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config("food", None, ["synth.max_tokens=64", "judge.keep_labels=[yes, open]", "mix.seed=3",
                                     "input.path=x.json"])
    assert cfg.synth.max_tokens == 64
    assert cfg.judge.keep_labels == ["yes", "open"]  # 'yes' stays a string, not a YAML 1.1 boolean
    assert cfg.mix.seed == 3 and cfg.input.path == "x.json"


@pytest.mark.parametrize(
    "override, must_contain",
    [
        ("synth.max_tokn=5", ["synth.max_tokn", "max_tokens"]),  # unknown key names the allowed ones
        ("synth.engine=torch", ["synth.engine", "'torch'", "vllm", "transformers"]),
        ("synth.max_tokens=lots", ["synth.max_tokens", "'lots'", "integer"]),
        ("mix.general_fraction=2", ["mix.general_fraction", "2", "less than or equal to 1"]),
        ("nosuchsection.x=1", ["nosuchsection", "synth"]),
    ],
)
def test_bad_overrides_name_key_value_and_allowed(override, must_contain):
    with pytest.raises(ConfigError) as e:
        load_config("biomed", None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for s in must_contain:
        assert s in msg, (s, msg)


def test_unknown_domain_and_profile_list_alternatives(tmp_path):
    with pytest.raises(ConfigError, match="biomed"):
        load_config("astronomy")
    with pytest.raises(ConfigError, match="tiny"):
        load_config("biomed", "huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_yaml_file_domain(tmp_path):
    p = tmp_path / "derm.yaml"
    p.write_text("domain: derm\nsynth:\n  max_tokens: 100\n")
    cfg = load_config(str(p))
    assert cfg.domain == "derm" and cfg.synth.max_tokens == 100


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("synth.max_tokens")


def test_hash_changes_with_row_affecting_settings_only():
    a = load_config("biomed", "tiny")
    b = load_config("biomed", "tiny", ["synth.max_tokens=65"])
    c = load_config("biomed", "tiny", ["hub.private=false", "train.epochs=3"])
    assert a.hash() != b.hash()
    assert a.hash() == c.hash()
