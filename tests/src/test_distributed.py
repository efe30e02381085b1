"""Data-parallel training through `accelerate launch`: 2 CPU processes over gloo on the tiny model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from src import distributed
from src.compute import Compute
from tests.conftest import CACHE, ROOT, TINY, typed_config

ACCELERATE = Path(sys.executable).with_name("accelerate")


def launch(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            str(ACCELERATE),
            "launch",
            "--config_file",
            str(ROOT / "conf" / "accelerate" / "ddp.yaml"),
            "--num_processes",
            "2",
            "-m",
            "src.train",
            *TINY,
            f"paths.cache_dir={CACHE}",
            *overrides,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_two_process_ddp_writes_one_run_with_identical_replicas(tmp_path):
    result = launch(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    # Hydra named a folder per process; only the main process's remains, holding everything.
    runs = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    # events.out.tfevents.<time>.<host>.<pid>.<n>: all from one process (add_hparams adds its own files)
    writers = {p.name.split(".")[-2] for p in (run / "tensorboard").glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]

    assert "× 2 (processes) = 4" in output  # b_micro 2 × G 1 × N 2
    digests = re.search(r"trained weights sha256 on each of 2 processes: (\w+), (\w+)", output)
    assert digests is not None, output[-4000:]
    assert digests.group(1) == digests.group(2)
    # 40 examples, 20% held out, packed → 16 rows, 4 per optimizer step over both processes
    assert metrics["global_step"] == metrics["planned_steps"] == 8

    # The same command into the finished folder is refused by every process, and nothing is touched.
    before = hashlib.sha256((run / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()
    again = launch(tmp_path, f"hydra.run.dir={run}")
    assert again.returncode != 0
    assert "already holds a finished run" in again.stdout + again.stderr
    assert hashlib.sha256((run / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest() == before


def test_only_the_main_process_writes_hydra_files(monkeypatch):
    argv = ["src/train.py", "lora=r8"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert distributed.launcher_argv(argv) == argv
    monkeypatch.setenv("RANK", "1")
    assert distributed.launcher_argv(argv)[2:] == [
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
        "hydra.job_logging.root.level=WARNING",
    ]
    with pytest.raises(SystemExit, match="cannot run under accelerate launch"):
        distributed.launcher_argv([*argv, "-m"])
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.launcher_argv([*argv, "-m"]) == [*argv, "-m"]


def test_sharded_launch_needs_4bit_weights_stored_in_the_compute_dtype(monkeypatch):

    from src.config import ConfigError, validate

    def check(*overrides):
        validate(typed_config(list(overrides)))

    check("memory=qlora")  # one process, or DDP: bitsandbytes' uint8 storage is fine
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(
        ConfigError, match=r"memory.bnb_4bit_quant_storage=bfloat16 \(memory=fsdp_qlora does\)"
    ):
        check("memory=qlora")
    check("memory=fsdp_qlora")
    check("memory=bf16")  # nothing quantized, nothing to match


def test_sharded_weights_are_recognised_from_the_trainers_plugins(monkeypatch):
    """FSDP and ZeRO-3 split the weights across processes; DDP and ZeRO-1/2 keep them whole."""
    from types import SimpleNamespace

    def trainer(fsdp=False, zero_stage=None):
        plugin = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
        state = SimpleNamespace(deepspeed_plugin=plugin)
        return SimpleNamespace(
            is_fsdp_enabled=fsdp,
            is_deepspeed_enabled=plugin is not None,
            accelerator=SimpleNamespace(state=state),
        )

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.sharded(trainer(fsdp=True)) == "FSDP shards the weights across 2 processes"
    assert (
        distributed.sharded(trainer(zero_stage=3)) == "DeepSpeed ZeRO-3 shards the weights across 2 processes"
    )
    assert distributed.sharded(trainer(zero_stage=2)) is None
    assert distributed.sharded(trainer()) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.sharded(trainer(fsdp=True)) is None  # one process holds everything


def test_sharded_runs_skip_the_replica_hash(monkeypatch, caplog):
    """Each process of a sharded run hashes its own shard: the digests differ by design, and the old check
    raised 'replicas ended with different weights' before the adapter was saved. (No process group exists
    here: the old code's gather would fail outright.)"""
    import logging

    import torch

    monkeypatch.setenv("WORLD_SIZE", "2")
    model = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.INFO, logger="src.distributed"):
        assert distributed.check_replicas_agree(model, "FSDP shards the weights across 2 processes") == []
    assert "replica check skipped: FSDP shards the weights across 2 processes" in caplog.text


@pytest.mark.parametrize("sharded_by", [None, "FSDP shards the weights across 2 processes"])
def test_a_sharded_run_never_generates_and_logs_why(sharded_by, monkeypatch, tmp_path, caplog):
    """generate() on the main process alone waits forever for the other processes' shards (a sharded forward
    is collective): samples and the task metric are skipped, with the reason in the log. The run itself is
    real (tiny model, one process); only the sharding is reported by a patched `distributed.sharded`."""
    import logging

    from src import stages
    from src.evaluate import generate_replies

    calls = []
    monkeypatch.setattr(distributed, "sharded", lambda trainer: sharded_by)
    monkeypatch.setattr(
        "src.evaluate.generate_replies", lambda *a, **k: calls.append(a) or generate_replies(*a, **k)
    )
    monkeypatch.setattr(
        "src.callbacks.generate_replies", lambda *a, **k: calls.append(a) or generate_replies(*a, **k)
    )
    overrides = [
        *TINY,
        "optim.max_steps=2",
        "eval.steps=1",
        "monitor.samples_every_evals=1",
        "eval.reuse_baseline=false",
    ]
    cfg = typed_config(overrides, output_dir=tmp_path, cache_dir=CACHE)
    cfg.data.task_metric = "json_exact_match"
    with caplog.at_level(logging.INFO):
        base, tokenizer = stages.build_tokenizer(cfg)
        data = stages.build_data(cfg, tokenizer, tmp_path)
        run = stages.build_run(cfg, Compute.of(cfg), stages.build_model(cfg, base), tokenizer, data, tmp_path)
        metrics = run.train()
    assert metrics["status"] == "finished" and metrics["global_step"] == 2
    skipped = "sample generations and the task metric are skipped: FSDP shards the weights" in caplog.text
    if sharded_by is None:  # the same run unsharded: baseline, 2 evals and the end each generate
        assert len(calls) >= 4 and not skipped
        assert set(metrics["task_metric"]["after"]) >= {"json_exact_match"}
    else:
        assert calls == [] and skipped
        assert metrics["task_metric"]["after"] == {} and metrics["task_metric"]["before"] == {}
        # its baseline lacks the task metric and samples, so it must not stand in for a whole one later
        cache = run.baseline_cache
        assert not cache.exists() or "samples" in json.loads(cache.read_text())
