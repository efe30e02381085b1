"""The data stage's cache: tokenized once per distinct input (file contents, Hub revision, role of each file),
reused after, one process tokenizing while the others wait."""

import json
from pathlib import Path

import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from src.base_model import resolve_base
from src.data import cache, loading
from src.data.cache import prepare_data
from src.errors import ConfigError
from src.tokenizer import load_tokenizer, tokenizer_identity
from tests.conftest import CACHE, TINY, compose_config
from tests.src.data.test_loading import data_config, write_jsonl


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


def test_local_jsonl_is_cached_and_rebuilt_when_the_file_changes(tokenizer, tmp_path):
    rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    first = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    second = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    assert not first.from_cache and second.from_cache
    assert first.cache_path == second.cache_path
    assert second.train["input_ids"] == first.train["input_ids"]
    assert second.eval_conversations == first.eval_conversations and len(first.eval_conversations) == 2
    assert second.report == first.report
    write_jsonl(path, rows + [{"prompt": "Say 10", "completion": "10"}])
    third = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    assert not third.from_cache and third.cache_path != first.cache_path
    assert len(third.train) + len(third.eval) == 11
    skipping = prepare_data(data_config(path, "data.on_bad_example=skip"), tokenizer, tmp_path / "cache")
    assert not skipping.from_cache and skipping.cache_path != third.cache_path


def test_builtin_data_is_deterministic_and_split_once(tokenizer, tmp_path):
    cfg = OmegaConf.to_object(compose_config(TINY)).data
    a = prepare_data(cfg, tokenizer, tmp_path / "a")
    b = prepare_data(cfg, tokenizer, tmp_path / "b")
    assert a.train["input_ids"] == b.train["input_ids"] and a.eval_conversations == b.eval_conversations
    assert (len(a.train), len(a.eval)) == (32, 8)
    answer = a.eval_conversations[0][-1]["content"]
    assert set(json.loads(answer)) == {"name", "age", "job", "city"}


def test_hub_dataset_revision_is_passed_and_keys_the_cache(tokenizer, tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, split, revision=None):
        calls.append((path, split, revision))
        return Dataset.from_list(
            [
                {
                    "messages": [
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"},
                    ]
                }
            ]
            * 3
        )

    monkeypatch.setattr(loading, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(cache, "hub_revision", lambda path, revision: revision)  # no network in tests
    overrides = [*TINY, "data=ultrachat_200k", "data.revision=abc123"]
    cfg = OmegaConf.to_object(compose_config(overrides)).data
    data = prepare_data(cfg, tokenizer, tmp_path / "cache")
    assert calls == [
        ("HuggingFaceH4/ultrachat_200k", "train_sft", "abc123"),
        ("HuggingFaceH4/ultrachat_200k", "test_sft", "abc123"),
    ]
    assert (len(data.train), len(data.eval)) == (3, 3)
    cfg.revision = "def456"
    assert prepare_data(cfg, tokenizer, tmp_path / "cache").cache_path != data.cache_path


def test_an_unpinned_hub_dataset_that_changed_upstream_is_tokenized_again(tokenizer, tmp_path, monkeypatch):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}] * 3
    monkeypatch.setattr(loading, "load_dataset", lambda path, split, revision=None: Dataset.from_list(rows))
    cfg = OmegaConf.to_object(compose_config([*TINY, "data=ultrachat_200k"])).data  # revision: null
    monkeypatch.setattr(cache, "hub_revision", lambda path, revision: "commit-1")
    first = prepare_data(cfg, tokenizer, tmp_path / "cache")
    assert prepare_data(cfg, tokenizer, tmp_path / "cache").from_cache  # same upstream commit: reused
    monkeypatch.setattr(cache, "hub_revision", lambda path, revision: "commit-2")  # main moved upstream
    second = prepare_data(cfg, tokenizer, tmp_path / "cache")
    assert not second.from_cache and second.cache_path != first.cache_path


def test_train_and_eval_files_are_keyed_by_role(tokenizer, tmp_path):
    """`path=a,b` is a random split of a + b; `path=a eval_path=b` evaluates on b: not the same data."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"Say {i}", "completion": str(i)} for i in range(8)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"Tell {i}", "completion": str(i)} for i in range(4)])
    both = prepare_data(data_config(f"'{a},{b}'"), tokenizer, tmp_path / "cache")  # quoted: one value
    by_role = prepare_data(data_config(a, eval_path=b), tokenizer, tmp_path / "cache")
    assert not by_role.from_cache and by_role.cache_path != both.cache_path
    assert [c[0]["content"] for c in by_role.eval_conversations] == [f"Tell {i}" for i in range(4)]


def test_concurrent_preparers_tokenize_once_and_leave_no_temporary_folder(tokenizer, tmp_path, monkeypatch):
    import threading

    from src.data import tokenization

    path = write_jsonl(
        tmp_path / "t.jsonl", [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
    )
    cfg = data_config(path)
    calls, original = [], cache.tokenize_split

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(cache, "tokenize_split", counting)
    results, barrier = [], threading.Barrier(3)

    def prepare() -> None:
        barrier.wait()
        results.append(prepare_data(cfg, tokenizer, tmp_path / "cache"))

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == ["eval", "train"]  # one process tokenized; the others waited and read its cache
    assert sorted(r.from_cache for r in results) == [False, True, True]
    assert len({r.cache_path for r in results}) == 1
    leftovers = [p.name for p in (tmp_path / "cache" / "data").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and tokenization.tokenize_split is original


def test_a_cache_miss_returns_the_memory_mapped_splits_as_int32(tokenizer, tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl", [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
    )
    data = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    assert not data.from_cache
    for split in (data.train, data.eval):
        assert split.cache_files and all(
            Path(f["filename"]).is_relative_to(data.cache_path) for f in split.cache_files
        )
        assert split.features["input_ids"].feature.dtype == split.features["labels"].feature.dtype == "int32"
        assert split.column_names == ["input_ids", "labels"]
    # the eval conversations are a column of the eval split, decoded row by row
    assert len(data.eval_conversations) == len(data.eval) == 2  # eval_fraction=0.2 of 10
    assert [data.eval_conversations[0], data.eval_conversations[-1]] == list(data.eval_conversations)
    assert data.eval_conversations[:] == list(data.eval_conversations)
    assert data.eval_conversations[0][1]["role"] == "assistant"
    # the work files (raw rows, map outputs) are gone; the cache holds the dataset and its report
    assert sorted(p.name for p in data.cache_path.iterdir()) == ["dataset", "report.json"]


def test_a_process_waiting_past_the_lock_timeout_names_the_lock_and_prepare(tokenizer, tmp_path):
    from filelock import FileLock

    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"Say {i}", "completion": str(i)} for i in range(4)])
    cfg = data_config(path)
    lock = (
        tmp_path / "cache" / "data" / f"{cfg.name}-{cache.cache_key(cfg, tokenizer_identity(tokenizer))}.lock"
    )
    lock.parent.mkdir(parents=True)
    with FileLock(lock), pytest.raises(ConfigError) as error:  # another process is tokenizing
        prepare_data(cfg, tokenizer, tmp_path / "cache", lock_timeout=0.3)
    assert str(lock) in str(error.value) and "`python -m src.prepare <the same overrides>`" in str(
        error.value
    )
    assert not prepare_data(cfg, tokenizer, tmp_path / "cache", lock_timeout=0.3).from_cache  # released
