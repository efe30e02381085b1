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
from tests.forked_cli import run_python

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
    result = run_python(command(run_dir, *extra), cwd=ROOT, timeout=600)
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
    # train_loss is the mean over all 30 steps, not over the steps after the resume (transformers' own figure)
    assert resumed["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-5)
    # TensorBoard continues the curves: every step once, none logged twice by the two attempts
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    # and its counters continue too: the whole run's train_loss, tokens counted from the start
    uninterrupted = EventAccumulator(str(reference / "tensorboard"))
    uninterrupted.Reload()
    for tag in ("train/train_loss", "train/num_tokens"):
        got = {e.step: e.value for e in events.Scalars(tag)}
        want = {e.step: e.value for e in uninterrupted.Scalars(tag)}
        assert got.keys() == want.keys() and list(got.values()) == pytest.approx(
            list(want.values()), rel=1e-5
        ), tag
    last_line = [line for line in (run_dir / "train.log").read_text().splitlines() if '"train_loss"' in line][
        -1
    ]
    assert f"{expected['train_loss']:.4f}"[:-1] in last_line.replace('"train_loss": ', "")
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


def folder_digest(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(run_dir: Path, *extra: str) -> str:
    result = run_python(command(run_dir, *extra), cwd=ROOT, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_refused_command_changes_no_byte_of_a_finished_run(reference):
    """Hydra used to rewrite .hydra/config.yaml (here: lr 5e-3, never trained) and append to train.log."""
    before = folder_digest(reference)
    output = refused(reference, "optim.learning_rate=5e-3")
    assert "already holds a finished run" in output
    assert folder_digest(reference) == before


def test_resume_with_other_settings_is_refused_naming_them_and_keeps_the_record(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, ignore=shutil.ignore_patterns("metrics.json", "adapter"))
    before = folder_digest(run_dir)
    output = refused(run_dir, "resume=true", "optim.learning_rate=5e-3")
    assert "optim.learning_rate (0.001 → 0.005)" in output
    output = refused(run_dir, "resume=true", "lora=r8")  # used to die with a traceback after loading weights
    assert "lora.r (16 → 8)" in output
    assert folder_digest(run_dir) == before


def test_a_run_killed_before_its_first_checkpoint_is_not_silently_reused(reference, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(reference / "config.yaml", run_dir / "config.yaml")  # its record, written at the start
    shutil.copy(reference / "train.log", run_dir / "train.log")
    before = folder_digest(run_dir)
    assert "holds an unfinished run; add resume=true" in refused(run_dir)
    assert "has no complete checkpoint" in refused(run_dir, "resume=true")
    assert folder_digest(run_dir) == before


def test_a_stray_checkpoint_copy_does_not_break_resuming(reference, tmp_path):
    """A user's `checkpoint-28-copy` used to crash the checkpoint scan with a traceback."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, ignore=shutil.ignore_patterns("metrics.json", "adapter"))
    newest = complete_checkpoints(run_dir)[-1]
    shutil.copytree(newest, newest.with_name(f"{newest.name}-copy"))
    assert complete_checkpoints(run_dir)[-1] == newest
    run(run_dir, "resume=true")
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
