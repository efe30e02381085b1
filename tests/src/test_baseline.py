"""The untouched model's baseline cache (src/baseline.py): what keys it, and read-or-measure."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from src.baseline import baseline_key, baseline_path, cached_or_measured
from src.compute import Compute
from tests.conftest import TINY, typed_config

CPU_FP32 = Compute(on_cpu=True, dtype=torch.float32)


def test_the_key_changes_with_what_the_baseline_depends_on_and_nothing_else():
    cfg = typed_config(TINY)
    key = baseline_key(cfg, Path("data-a"), CPU_FP32)
    assert len(key) == 20 and key == baseline_key(typed_config(TINY), Path("data-a"), CPU_FP32)
    assert baseline_key(cfg, Path("data-b"), CPU_FP32) != key  # another tokenized eval set
    assert baseline_key(cfg, Path("data-a"), Compute(on_cpu=False, dtype=torch.float32)) != key
    assert baseline_key(cfg, Path("data-a"), Compute(on_cpu=True, dtype=torch.bfloat16)) != key
    assert baseline_key(typed_config([*TINY, "eval.max_new_tokens=9"]), Path("data-a"), CPU_FP32) != key
    # what training changes, the baseline does not depend on: every trial of a sweep shares it
    for override in ("optim.learning_rate=3e-4", "lora.r=64", "optim.num_train_epochs=1", "seed=7"):
        assert baseline_key(typed_config([*TINY, override]), Path("data-a"), CPU_FP32) == key, override


def test_the_path_lies_in_the_cache_folders_baselines(tmp_path):
    cfg = typed_config(TINY, cache_dir=tmp_path)
    path = baseline_path(cfg, Path("data-a"), CPU_FP32)
    assert path == tmp_path / "baselines" / f"{baseline_key(cfg, Path('data-a'), CPU_FP32)}.json"


def test_measured_once_then_read_back_and_never_read_when_reuse_is_off(tmp_path):
    path, calls = tmp_path / "baselines" / "k.json", []

    def measure():
        calls.append(1)
        return {"eval_loss": 1.25 + len(calls)}

    assert cached_or_measured(path, True, measure, may_write=True) == ({"eval_loss": 2.25}, False)
    assert json.loads(path.read_text()) == {"eval_loss": 2.25}
    assert cached_or_measured(path, True, measure, may_write=True) == ({"eval_loss": 2.25}, True)
    assert cached_or_measured(path, False, measure, may_write=False) == ({"eval_loss": 3.25}, False)
    assert len(calls) == 2 and json.loads(path.read_text()) == {"eval_loss": 2.25}  # not overwritten


def test_an_unreadable_cache_file_is_measured_again(tmp_path):
    path = tmp_path / "k.json"
    path.write_text('{"eval_loss": 1.')  # torn
    assert cached_or_measured(path, True, lambda: {"eval_loss": 0.5}, may_write=False) == (
        {"eval_loss": 0.5},
        False,
    )
