"""Loading: local files (JSON Lines, JSON documents, parquet, CSV, globs), built-in generators and validation of the
data keys; every row is kept once, as its JSON text, with where it came from."""

import json

import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from src.base_model import resolve_base
from src.config import ConfigError, validate
from src.data.cache import prepare_data
from src.data.tokenization import IGNORE_INDEX
from src.tokenizer import load_tokenizer
from tests.conftest import CACHE, TINY, compose_config


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


def labelled_runs(tokenizer, tokens) -> list[str]:
    """Each contiguous run of labelled tokens, decoded; a label is either -100 or the token itself."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(tokens["input_ids"], tokens["labels"]):
        assert label in (IGNORE_INDEX, token)
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def data_config(path, *overrides, eval_path=None):
    extra = [f"data.eval_path={eval_path}"] if eval_path else []
    return OmegaConf.to_object(
        compose_config([*TINY, "data=jsonl", f"data.path={path}", *extra, *overrides])
    ).data


# ---------------------------------------------------------------- local files


ROWS = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(6)]


@pytest.mark.parametrize("kind", ["json_lines", "json_array", "parquet", "csv"])
def test_json_parquet_and_csv_files_load(tokenizer, tmp_path, kind):
    table = Dataset.from_list(ROWS)
    if kind == "json_lines":
        path = tmp_path / "train.json"
        table.to_json(path)
    elif kind == "json_array":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(ROWS))
    elif kind == "parquet":
        path = tmp_path / "train.parquet"
        table.to_parquet(path)
    else:
        path = tmp_path / "train.csv"
        table.to_csv(path)
    data = prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")
    assert data.report["format"] == "prompt_completion" and len(data.train) == len(data.eval) == 6
    assert [labelled_runs(tokenizer, t) for t in data.train] == [[f"{i}<|im_end|>"] for i in range(6)]
    assert data.eval_conversations[5] == [
        {"role": "user", "content": "Say 5"},
        {"role": "assistant", "content": "5"},
    ]


def test_a_glob_loads_every_matching_file(tokenizer, tmp_path):
    write_jsonl(tmp_path / "part-1.jsonl", ROWS[:3])
    write_jsonl(tmp_path / "part-2.jsonl", ROWS[3:])
    data = prepare_data(
        data_config(tmp_path / "part-*.jsonl", eval_path=tmp_path / "part-1.jsonl"), tokenizer, tmp_path / "c"
    )
    assert len(data.train) == 6 and len(data.eval) == 3
    assert [labelled_runs(tokenizer, t) for t in data.train] == [[f"{i}<|im_end|>"] for i in range(6)]


def test_missing_columns_are_listed(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}] * 4)
    with pytest.raises(ConfigError, match=r"cannot tell the format from columns \['answer', 'question'\]"):
        prepare_data(data_config(path, "data.on_bad_example=skip"), tokenizer, tmp_path / "cache")


def validated(*overrides):
    validate(OmegaConf.to_object(compose_config([*TINY, *overrides])))


def test_validate_refuses_wrapped_packing_and_unknown_choices():
    validated("data.packing_strategy=bfd_split", "data.on_bad_example=skip")
    with pytest.raises(ConfigError, match=r"packing_strategy=wrapped .* attend to each other .*; use bfd"):
        validated("data.packing_strategy=wrapped")
    with pytest.raises(ConfigError, match=r"data.packing_strategy='greedy' is not one of"):
        validated("data.packing_strategy=greedy")
    with pytest.raises(ConfigError, match=r"data.on_bad_example='ignore' is not one of \['fail', 'skip'\]"):
        validated("data.on_bad_example=ignore")
    with pytest.raises(ConfigError, match=r"data.revision applies to Hub datasets only"):
        validated("data.revision=main")


def test_the_arithmetic_task_is_right_and_fits_one_example_per_grid_row(tokenizer):
    """Grid 2's task: every worked step is correct, results stay non-negative, the last line is the answer,
    and each example fits a 128-token row alone (so a 1-epoch grid trial has 24 steps and 8 evals)."""
    import re

    from src.builtin_data import arithmetic_examples

    rows = arithmetic_examples(64, seed=42)
    assert rows == arithmetic_examples(64, seed=42) and rows != arithmetic_examples(64, seed=43)
    for row in rows:
        prompt, answer = (m["content"] for m in row["messages"])
        *steps, last = answer.split("\n")
        assert len(steps) == 3
        value = int(re.search(r"(\d+)", prompt).group(1))  # the start number comes first
        for line in steps:
            left, symbol, right, _, result = line.split()
            assert int(left) == value
            value = {"+": int(left) + int(right), "-": int(left) - int(right), "*": int(left) * int(right)}[
                symbol
            ]
            assert int(result) == value >= 0
        assert last == f"Answer: {value}"
        length = len(
            tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        )
        assert 64 < length <= 128
