"""The value checks (src/config_checks.py): each refusal names its field; any value for any config field is
either accepted or refused with one readable sentence before weights load, never a traceback from inside a
library (property-based); the tables cover the schema's numbers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, OverrideParseException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from src.config import ConfigError, TrainConfig, validate
from src.config_checks import CHOICES, RANGES, Range, check_environment
from tests.conftest import ROOT, compose_config

SKIP = {"paths", "trial", "resume"}  # set by Hydra or the sweeper, not by users


def leaf_fields(node=TrainConfig, prefix="") -> list[str]:
    names = []
    for f in dataclasses.fields(node):
        name = f"{prefix}{f.name}"
        if name in SKIP:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            names += leaf_fields(type(default), f"{name}.")
        else:
            names.append(name)
    return names


FIELDS = leaf_fields()
NASTY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
VALUES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["true", "false", "null", "''", "[]", "{}", "[a,b]", "1e309", "-0", "nan", "inf", "-inf"]
    ),
    NASTY_TEXT.map(lambda t: "'" + t.replace("\\", "\\\\").replace("'", "\\'") + "'"),
    NASTY_TEXT,
)


# Numbers any value of which a run can use (seeds, caps, a threshold) or that a group check bounds itself.
FREE_NUMBERS = {
    "model.random_seed",
    "optim.max_steps",  # -1 = use num_train_epochs
    "data.builtin_examples",  # > 0 when data.source=builtin (_check_data)
    "data.split_seed",
    "data.max_train_examples",
    "data.max_eval_examples",
    "eval.early_stopping_threshold",
    "plan.gpu_gb",
}


def test_every_number_of_the_schema_has_a_range_or_is_free():
    """A numeric field added to a schema without a row in RANGES fails here: bound it, or name it free."""
    numbers = set()
    for name in FIELDS:
        node, leaf = name.rpartition(".")[0], name.rpartition(".")[2]
        schema = TrainConfig if not node else type(getattr(TrainConfig(), node))
        kind = {f.name: f.type for f in dataclasses.fields(schema)}[leaf]
        if kind.replace(" | None", "") in ("int", "float"):
            numbers.add(name)
    assert numbers == set(RANGES) | FREE_NUMBERS
    assert set(CHOICES) <= set(FIELDS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_is_accepted_or_refused_in_one_sentence(field, value):
    try:
        cfg = OmegaConf.to_object(compose_config([f"{field}={value}"]))
        validate(cfg)
    except (ConfigCompositionException, OverrideParseException, ConfigError) as error:
        message = str(error)
        assert message and "Traceback" not in message
        assert message.count("\n") <= 8, message  # Hydra's parse errors add a caret line and a link


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.optimizer=adamw_fast", "optim.optimizer"),
        ("eval.max_new_tokens=0", "eval.max_new_tokens"),
        ("eval.task_examples=-1", "eval.task_examples"),
        ("monitor.num_samples=-2", "monitor.num_samples"),
        ("optim.learning_rate=nan", "optim.learning_rate"),
        ("optim.num_train_epochs=inf", "optim.num_train_epochs"),
        ("lora.target_modules=[]", "lora.target_modules"),
    ],
)
def test_values_a_library_would_choke_on_are_refused_early(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(OmegaConf.to_object(compose_config([override])))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["lora.r=0"], "lora.r"),
        (["lora.r=-8"], "lora.r"),
        (["optim.learning_rate=0"], "optim.learning_rate"),
        (["optim.learning_rate=-1e-4"], "optim.learning_rate"),
        (["optim.warmup_ratio=1.0"], "optim.warmup_ratio"),
        (["optim.warmup_ratio=-0.1"], "optim.warmup_ratio"),
        (["data=jsonl", "data.path=/no/such/file.jsonl"], "data.path"),
        (["data=jsonl"], "data.path"),
        (["lora=none"], "lora=none"),
        (["optim.lr_scheduler_type=cosine_restarts"], "optim.lr_scheduler_type"),
        (["data.max_length=0"], "data.max_length"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as error:
        validate(OmegaConf.to_object(compose_config(overrides)))
    assert field in str(error.value)


@pytest.mark.parametrize(
    ("bounds", "admitted"),
    [("[)", [0, 0.5]), ("(]", [0.5, 1]), ("[]", [0, 0.5, 1]), ("()", [0.5])],
)
def test_a_range_admits_the_numbers_its_bounds_say(bounds, admitted):
    accepted = Range(0, 1, bounds, "{key}={value}")
    assert [v for v in (-0.1, 0, 0.5, 1, 1.1, float("nan"), "0.5", None) if accepted.admits(v)] == admitted


@pytest.mark.parametrize(
    ("accepted", "refused"),
    [
        (["lora=none", "memory=bf16", "lora.r=0", "lora.dropout=1.5"], "lora.r=0"),  # no adapter, no rank
        (["optim.max_steps=10", "optim.num_train_epochs=0"], "optim.num_train_epochs=0"),
        (["data.eval_fraction=0", "data.eval_split=test"], "data.eval_fraction=0"),
        (["lora.alpha=null"], "lora.alpha=0"),
    ],
    ids=["lora-off", "max-steps", "eval-split", "alpha-null"],
)
def test_a_range_holds_only_where_the_run_uses_the_field(accepted, refused):
    validate(OmegaConf.to_object(compose_config(accepted)))
    with pytest.raises(ConfigError, match=r"^" + refused.split("=")[0].replace(".", r"\.") + "="):
        validate(OmegaConf.to_object(compose_config([refused])))


def test_the_environment_checks_name_what_this_machine_lacks(monkeypatch, tmp_path):
    cfg = OmegaConf.to_object(compose_config([f"model.chat_template={tmp_path}/chat.jinja"]))
    with pytest.raises(ConfigError) as error:
        check_environment(cfg)
    assert (
        str(error.value)
        == f"model.chat_template: no file {tmp_path}/chat.jinja (a .jinja value names a file)."
    )
    (tmp_path / "chat.jinja").write_text("{{ messages }}")
    check_environment(cfg)

    cfg = OmegaConf.to_object(compose_config(["monitor.report_to=[mlflow]"]))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # as if mlflow were not installed
    with pytest.raises(ConfigError) as error:
        check_environment(cfg)
    assert (
        str(error.value) == "monitor.report_to=[mlflow] needs the mlflow package: pip install -e '.[mlflow]'."
    )


def test_the_optimizer_names_are_the_installed_transformers_ones():
    from transformers.training_args import OptimizerNames

    from src.config_checks import _optimizer_names

    assert _optimizer_names() == [name.value for name in OptimizerNames]


def test_validating_a_config_imports_neither_torch_nor_transformers():
    """`python -m src.prepare` validates before its cache hit, which must stay import-light."""
    code = (
        "import sys; from omegaconf import OmegaConf; from src.config import compose, validate; "
        "validate(OmegaConf.to_object(compose(['paths.output_dir=unused']))); "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'bitsandbytes') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
