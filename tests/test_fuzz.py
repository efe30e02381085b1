"""Property-based tests: any value for any config field is either accepted or refused with one readable
sentence before weights load — never a traceback from inside a library."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.errors import ConfigCompositionException, OverrideParseException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from src.config import ConfigError, TrainConfig, validate
from tests.conftest import compose_config

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


def test_fields_are_enumerated():
    assert {"optim.learning_rate", "lora.r", "data.max_length", "memory.load_in_4bit", "seed"} <= set(FIELDS)


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
    else:
        assert isinstance(cfg, TrainConfig)


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


# ---------------------------------------------------------------- corrupted data files

VALID_ROWS = [
    {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": str(i)}]}
    for i in range(6)
]


@pytest.fixture(scope="module")
def tokenizer():
    from src.model import load_tokenizer, resolve_base
    from tests.conftest import CACHE, TINY

    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


def corrupt(data: bytes, kind: str, position: int, blob: bytes) -> bytes:
    cut = position % (len(data) + 1)
    return {
        "truncate": data[:cut],
        "insert_bytes": data[:cut] + blob + data[cut:],
        "replace_bytes": data[:cut] + blob + data[cut + len(blob) :],
        "empty": b"",
        "latin1": data.decode().replace("Say", "Säy").encode("latin-1"),
        "utf16": data.decode().encode("utf-16"),
        "huge_string": data[:cut] + b'{"prompt": "' + b"x" * 20_000 + b'", "completion": "y"}\n' + data[cut:],
        "wrong_types": data.replace(b'"content": "Say 1"', b'"content": 17').replace(
            b'"role": "user"', b'"role": 5', 1
        ),
    }[kind]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(
        [
            "truncate",
            "insert_bytes",
            "replace_bytes",
            "empty",
            "latin1",
            "utf16",
            "huge_string",
            "wrong_types",
        ]
    ),
    position=st.integers(min_value=0, max_value=10_000),
    blob=st.binary(min_size=1, max_size=12),
    skip=st.booleans(),
)
def test_corrupted_data_is_read_or_refused_in_one_sentence(tokenizer, tmp_path, kind, position, blob, skip):
    import json
    import tempfile
    from pathlib import Path

    from src.data.cache import prepare_data

    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        path = Path(folder) / "train.jsonl"
        valid = "".join(json.dumps(r) + "\n" for r in VALID_ROWS).encode()
        path.write_bytes(corrupt(valid, kind, position, blob))
        overrides = ["model=tiny", "data=jsonl", f"data.path={path}", "data.max_length=64"]
        if skip:
            overrides.append("data.on_bad_example=skip")
        cfg = OmegaConf.to_object(compose_config(overrides))
        try:
            validate(cfg)
            data = prepare_data(cfg.data, tokenizer, Path(folder) / "cache")
        except ConfigError as error:
            assert str(error) and "\n" not in str(error).strip(), str(error)
        else:
            assert len(data.train) >= 1 and len(data.eval) >= 1
            assert all(any(label != -100 for label in row) for row in data.train["labels"])
