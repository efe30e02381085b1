"""Every option of every group composes into the typed schema, with the values its YAML file sets; keys and
types the schema lacks are refused by Hydra (the value checks are tested in test_config_checks.py)."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from src.config import TrainConfig, validate
from tests.conftest import CONF, ROOT, compose_config

GROUPS = ["model", "lora", "optim", "data", "memory"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def typed(overrides):
    return OmegaConf.to_object(compose_config(overrides))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "jsonl":
        overrides.append(f"data.path={ROOT / 'pyproject.toml'}")  # any existing file; format is checked later
    if group == "lora" and option == "none":
        overrides.append("memory=bf16")
    cfg = typed(overrides)
    given = {override.split("=")[0] for override in overrides}
    own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    own = {k: v for k, v in own.items() if k != "defaults" and f"{group}.{k}" not in given}  # set above
    assert {key: getattr(getattr(cfg, group), key) for key in own} == own
    validate(cfg)


def test_all_groups_have_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)
    assert {"smollm2_135m", "qwen2_5_1_5b", "llama3_1_8b", "tiny"} <= {o for g, o in OPTIONS if g == "model"}
    assert {"r8", "r16", "r32", "r64", "none"} <= {o for g, o in OPTIONS if g == "lora"}
    assert {"qlora", "bf16", "gpu_24gb", "gpu_80gb"} <= {o for g, o in OPTIONS if g == "memory"}


def test_defaults_are_the_embedded_qlora_run():
    cfg = typed([])
    assert cfg.model.source == "gguf" and cfg.model.name == "SmolLM2-135M-Instruct"
    assert cfg.memory.load_in_4bit and cfg.memory.bnb_4bit_quant_type == "nf4"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, None, 0.0)
    assert (
        cfg.optim.learning_rate == 1e-4 and cfg.optim.warmup_ratio == 0.05 and cfg.optim.weight_decay == 0.01
    )
    assert cfg.data.packing and cfg.data.assistant_only_loss and cfg.seed == 42


def test_qlora_preset_is_the_standard_qlora_recipe():
    cfg = typed(["memory=qlora"])
    m = cfg.memory
    assert (m.load_in_4bit, m.bnb_4bit_use_double_quant, m.bnb_4bit_compute_dtype) == (True, True, "bfloat16")
    assert (m.per_device_train_batch_size, m.gradient_accumulation_steps, m.gradient_checkpointing) == (
        4,
        4,
        True,
    )


def test_issue_overrides_compose():
    cfg = typed(["lora=r64", "optim=cosine", "optim.learning_rate=2e-4", "data.max_length=512"])
    assert (cfg.lora.r, cfg.optim.lr_scheduler_type, cfg.optim.learning_rate, cfg.data.max_length) == (
        64,
        "cosine",
        2e-4,
        512,
    )


def test_alpha_follows_rank():
    from src.model import alpha_for

    assert alpha_for(typed(["lora=r16"]).lora) == 32
    assert alpha_for(typed(["lora=r64"]).lora) == 128
    assert alpha_for(typed(["lora=r8", "lora.alpha=8"]).lora) == 8


def test_typo_in_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="learnin_rate"):
        compose_config(["optim.learnin_rate=1e-4"])


def test_wrong_type_is_refused():
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose_config(["optim.learning_rate=fast"])


def test_unknown_group_option_is_refused():
    with pytest.raises(ConfigCompositionException, match="r7"):
        compose_config(["lora=r7"])


def _schema_defaults(schema) -> dict:
    """Field name -> schema default (dataclasses.MISSING for fields without one; OmegaConf's '???' too)."""
    import dataclasses

    defaults = {}
    for field in dataclasses.fields(schema):
        if field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
        else:
            defaults[field.name] = field.default
    return defaults


def _has_default(value) -> bool:
    import dataclasses

    return value is not dataclasses.MISSING and value != "???"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_no_preset_contradicts_a_schema_default(group, option):
    """One home per value: a group field either has no schema default (MISSING, set by every option, which
    inherit through `defaults:`) or has one that no option changes. None means "not set" and may be set."""
    import dataclasses

    schema = {f.name: f for f in dataclasses.fields(TrainConfig)}[group].default_factory().__class__
    composed = OmegaConf.to_container(compose_config([f"{group}={option}"])[group], resolve=False)
    problems = []
    for name, default in _schema_defaults(schema).items():
        if not _has_default(default):
            if composed[name] == "???":
                problems.append(f"{group}/{option} leaves {group}.{name} unset")
        elif default is not None and composed[name] != default:
            problems.append(
                f"{group}/{option} sets {group}.{name}={composed[name]!r}, the schema says {default!r}"
            )
    assert not problems, "; ".join(problems)


def test_schema_defaults_equal_train_yaml():
    """The sections train.yaml sets itself (not groups): schema default and YAML value are one value."""
    import dataclasses

    composed = OmegaConf.to_container(compose_config([]), resolve=False)
    checked = 0
    for field in dataclasses.fields(TrainConfig):
        if field.name in GROUPS:
            continue
        default = (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        )
        if dataclasses.is_dataclass(default):
            for name, value in _schema_defaults(type(default)).items():
                if _has_default(value) and name in composed[field.name]:
                    assert composed[field.name][name] == value, f"{field.name}.{name}"
                    checked += 1
        elif _has_default(default) and field.name in composed:
            assert composed[field.name] == default, field.name
            checked += 1
    assert checked >= 20  # eval, monitor, save, plan and the top-level keys
