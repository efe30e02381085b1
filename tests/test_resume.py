"""A killed run resumes from its newest complete checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from src.config import ConfigError
from src.run_info import claim_run_dir, complete_checkpoints
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow

RUN = [
    *TINY,
    "optim.max_steps=30",
    "optim.learning_rate=1e-3",
    "eval.steps=2",
    "eval.task_examples=2",
    "monitor.samples_every_evals=0",
    "save.save_total_limit=3",
]


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "src.train", *RUN, f"hydra.run.dir={run_dir}", *extra]


def run(run_dir: Path, *extra: str) -> None:
    result = subprocess.run(command(run_dir, *extra), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run(run_dir)
    return run_dir


def kill_after_checkpoints(run_dir: Path, count: int) -> None:
    process = subprocess.Popen(
        command(run_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while len(complete_checkpoints(run_dir)) < count:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_run_resumes_to_the_same_result(reference, tmp_path):
    run_dir = tmp_path / "run"
    kill_after_checkpoints(run_dir, 2)
    assert not (run_dir / "metrics.json").exists()
    killed_at = int(complete_checkpoints(run_dir)[-1].name.split("-")[1])
    assert killed_at < 30
    run(run_dir, "resume=true")
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert resumed["global_step"] == expected["global_step"] == 30
    assert resumed["final_eval_loss"] == pytest.approx(expected["final_eval_loss"], abs=1e-5)
    assert resumed["best_eval_loss"] == pytest.approx(expected["best_eval_loss"], abs=1e-5)
    # TensorBoard continues the curves: every step once, none logged twice by the two attempts
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    ours = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    theirs = load_file(reference / "adapter" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0)


def test_partial_checkpoint_is_ignored(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, ignore=shutil.ignore_patterns("metrics.json", "adapter"))
    newest = complete_checkpoints(run_dir)[-1]
    partial = newest.with_name("checkpoint-99")
    shutil.copytree(newest, partial)
    (partial / "trainer_state.json").write_text('{"global_step": 9')  # cut off mid-write
    assert complete_checkpoints(run_dir)[-1] == newest
    assert claim_run_dir(run_dir, resume=True) == newest
    (partial / "trainer_state.json").unlink()
    assert claim_run_dir(run_dir, resume=True) == newest


def test_unfinished_run_is_not_restarted_without_resume(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, ignore=shutil.ignore_patterns("metrics.json"))
    before = sorted(os.listdir(run_dir / "checkpoints"))
    with pytest.raises(ConfigError, match="add resume=true"):
        claim_run_dir(run_dir, resume=False)
    with pytest.raises(ConfigError, match="already holds a finished run"):
        claim_run_dir(reference, resume=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        claim_run_dir(tmp_path / "empty", resume=True)
    assert sorted(os.listdir(run_dir / "checkpoints")) == before
