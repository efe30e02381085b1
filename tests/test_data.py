"""Data stage: formats normalise to chat messages, only assistant tokens carry labels, the cache is reused."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from src.config import ConfigError
from src.data import IGNORE_INDEX, prepare_data, render, to_messages, tokenize_example
from src.model import load_tokenizer, resolve_base
from tests.conftest import CACHE, TINY, compose_config


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


def labelled_text(tokenizer, tokens) -> str:
    return tokenizer.decode(
        [t for t, label in zip(tokens["input_ids"], tokens["labels"]) if label != IGNORE_INDEX]
    )


def test_only_assistant_tokens_are_labelled_in_multi_turn(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green, of course."},
    ]
    tokens = tokenize_example(tokenizer, messages, assistant_only_loss=True)
    assert labelled_text(tokenizer, tokens) == "Blue.<|im_end|>Green, of course.<|im_end|>"
    # the training text is exactly what the chat template renders for inference
    assert tokenizer.decode(tokens["input_ids"]) == render(tokenizer, messages)


def test_whole_sequence_loss_labels_everything(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    tokens = tokenize_example(tokenizer, messages, assistant_only_loss=False)
    assert tokens["labels"] == tokens["input_ids"]


@pytest.mark.parametrize(
    ("row", "fmt", "prompt", "answer"),
    [
        ({"prompt": "2+2?", "completion": "4"}, "prompt_completion", "2+2?", "4"),
        ({"instruction": "Add.", "input": "2 and 2", "output": "4"}, "alpaca", "Add.\n\n2 and 2", "4"),
        ({"instruction": "Say hi.", "input": "", "output": "hi"}, "alpaca", "Say hi.", "hi"),
    ],
)
def test_formats_become_messages(tokenizer, row, fmt, prompt, answer):
    messages = to_messages(row, fmt)
    assert messages == [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    tokens = tokenize_example(tokenizer, messages, assistant_only_loss=True)
    assert labelled_text(tokenizer, tokens) == f"{answer}<|im_end|>"


def test_plain_text_trains_on_everything(tokenizer):
    text = to_messages({"text": "Once upon a time."}, "text")
    tokens = tokenize_example(tokenizer, text, assistant_only_loss=True)
    assert labelled_text(tokenizer, tokens) == "Once upon a time.<|im_end|>"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def jsonl_config(path, *overrides):
    return OmegaConf.to_object(compose_config([*TINY, "data=jsonl", f"data.path={path}", *overrides])).data


def test_local_jsonl_is_cached_and_rebuilt_when_the_file_changes(tokenizer, tmp_path):
    rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
    path = tmp_path / "train.jsonl"
    write_jsonl(path, rows)
    first = prepare_data(jsonl_config(path), tokenizer, tmp_path / "cache")
    second = prepare_data(jsonl_config(path), tokenizer, tmp_path / "cache")
    assert not first.from_cache and second.from_cache
    assert first.cache_path == second.cache_path
    assert second.train["input_ids"] == first.train["input_ids"]
    write_jsonl(path, rows + [{"prompt": "Say 10", "completion": "10"}])
    third = prepare_data(jsonl_config(path), tokenizer, tmp_path / "cache")
    assert not third.from_cache and third.cache_path != first.cache_path
    assert len(third.train) + len(third.eval) == 11


def test_missing_columns_are_listed(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [{"question": "a", "answer": "b"}] * 4)
    with pytest.raises(ConfigError, match=r"cannot tell the format from columns \['answer', 'question'\]"):
        prepare_data(jsonl_config(path), tokenizer, tmp_path / "cache")


def test_malformed_line_names_file_and_line(tokenizer, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:2: malformed JSON"):
        prepare_data(jsonl_config(path), tokenizer, tmp_path / "cache")


def test_max_length_shorter_than_every_example(tokenizer, tmp_path):
    path = tmp_path / "long.jsonl"
    write_jsonl(path, [{"prompt": "word " * 50, "completion": "ok"}] * 5)
    with pytest.raises(ConfigError, match="data.max_length=16 is shorter than every example"):
        prepare_data(jsonl_config(path, "data.max_length=16"), tokenizer, tmp_path / "cache")


def test_builtin_data_is_deterministic_and_split_once(tokenizer, tmp_path):
    cfg = OmegaConf.to_object(compose_config(TINY)).data
    a = prepare_data(cfg, tokenizer, tmp_path / "a")
    b = prepare_data(cfg, tokenizer, tmp_path / "b")
    assert a.train["input_ids"] == b.train["input_ids"] and a.eval_conversations == b.eval_conversations
    assert (len(a.train), len(a.eval)) == (32, 8)
    answer = a.eval_conversations[0][-1]["content"]
    assert set(json.loads(answer)) == {"name", "age", "job", "city"}
