"""Property-based: a corrupted data file (truncated, stray bytes, another encoding, wrong types) is read or
refused in one sentence by validate and prepare_data, never a traceback from inside a library."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from src.config import ConfigError, validate
from tests.conftest import compose_config

VALID_ROWS = [
    {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": str(i)}]}
    for i in range(6)
]


@pytest.fixture(scope="module")
def tokenizer():
    from src.base_model import resolve_base
    from src.tokenizer import load_tokenizer
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
